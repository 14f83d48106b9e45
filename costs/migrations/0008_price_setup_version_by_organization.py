"""A change to prices bumps the ``setup_version`` of the organizations it
concerns, once per statement: every organization for a catalog price (no
organization), only its own for an override. Before, an override bumped every
organization, so deleting an organization with overrides had to lock every
organization first (the trigger's order), and with them every organization's
ingestion gate. One trigger per event: a trigger with transition tables
serves one."""

from django.db import migrations

from config.migration_sql import postgresql_only

BY_ORGANIZATION = """
CREATE OR REPLACE FUNCTION setup_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    everyone boolean;
    orgs uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT bool_or(organization_id IS NULL), array_agg(DISTINCT organization_id)
            INTO everyone, orgs FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT bool_or(organization_id IS NULL), array_agg(DISTINCT organization_id)
            INTO everyone, orgs FROM old_rows;
    ELSE
        SELECT bool_or(organization_id IS NULL), array_agg(DISTINCT organization_id)
            INTO everyone, orgs
            FROM (SELECT organization_id FROM new_rows
                  UNION ALL SELECT organization_id FROM old_rows) AS r;
    END IF;
    IF everyone IS NULL THEN  -- no row changed
        RETURN NULL;
    END IF;
    -- In id order, so two of these never wait on each other crosswise; FOR
    -- NO KEY UPDATE, as the UPDATE itself, which the foreign key checks of
    -- every tenant's writes (FOR KEY SHARE of their organization) pass.
    UPDATE {org} o SET setup_version = o.setup_version + 1
    FROM (SELECT id FROM {org} WHERE everyone OR id = ANY(orgs)
          ORDER BY id FOR NO KEY UPDATE) l
    WHERE o.id = l.id;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS setup_prices_changed ON {price};
CREATE TRIGGER setup_prices_inserted AFTER INSERT ON {price}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION setup_prices_changed();
CREATE TRIGGER setup_prices_updated AFTER UPDATE ON {price}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION setup_prices_changed();
CREATE TRIGGER setup_prices_deleted AFTER DELETE ON {price}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION setup_prices_changed();
"""

EVERYONE = """
DROP TRIGGER IF EXISTS setup_prices_inserted ON {price};
DROP TRIGGER IF EXISTS setup_prices_updated ON {price};
DROP TRIGGER IF EXISTS setup_prices_deleted ON {price};
CREATE OR REPLACE FUNCTION setup_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {org} o SET setup_version = o.setup_version + 1
    FROM (SELECT id FROM {org} ORDER BY id FOR NO KEY UPDATE) l WHERE o.id = l.id;
    RETURN NULL;
END $$;
CREATE TRIGGER setup_prices_changed AFTER INSERT OR UPDATE OR DELETE ON {price}
    FOR EACH STATEMENT EXECUTE FUNCTION setup_prices_changed();
"""


class Migration(migrations.Migration):
    dependencies = [("costs", "0007_usageevent_price_restrict")]

    operations = [
        postgresql_only(
            BY_ORGANIZATION, EVERYONE, org="profiles.Organization", price="costs.Price"
        )
    ]
