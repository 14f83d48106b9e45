"""A change to prices bumps every organization's ``setup_version``
(profiles/migrations/0003), once per statement: a catalog price is every
organization's, an organization's own price is an admin's rare edit, and a
catalog sync writes its prices in a few bulk statements."""

from django.db import migrations

from config.migration_sql import postgresql_only

BUMP = """
CREATE OR REPLACE FUNCTION setup_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In id order, so two of these never wait on each other crosswise; FOR
    -- NO KEY UPDATE, as the UPDATE itself, which the foreign key checks of
    -- every tenant's writes (FOR KEY SHARE of their organization) pass.
    UPDATE {org} o SET setup_version = o.setup_version + 1
    FROM (SELECT id FROM {org} ORDER BY id FOR NO KEY UPDATE) l WHERE o.id = l.id;
    RETURN NULL;
END $$;

CREATE TRIGGER setup_prices_changed AFTER INSERT OR UPDATE OR DELETE ON {price}
    FOR EACH STATEMENT EXECUTE FUNCTION setup_prices_changed();
"""

UNBUMP = """
DROP TRIGGER IF EXISTS setup_prices_changed ON {price};
DROP FUNCTION IF EXISTS setup_prices_changed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("costs", "0002_usage_event_org_index_redundant"),
        ("profiles", "0003_organization_setup_version"),
    ]

    operations = [postgresql_only(BUMP, UNBUMP, org="profiles.Organization", price="costs.Price")]
