"""``Organization.setup_version`` and the triggers that keep it.

The version goes up in the same transaction as any change to what a request
reads ahead of its write (costs.services.ahead keeps that in memory per
version): here, a profile renamed, moved, switched off or on, or deleted and a change of time zone;
quotas and costs add their budgets, periods and prices. A save of the
organization with a stale version in hand (the admin's form) never takes it
back down. PostgreSQL only: on another database nothing is kept in memory."""

from django.db import migrations, models

from config.migration_sql import postgresql_only

BUMP = """
CREATE OR REPLACE FUNCTION setup_bump(org uuid) RETURNS void LANGUAGE sql AS $$
    UPDATE {org} SET setup_version = setup_version + 1 WHERE id = org
$$;

CREATE OR REPLACE FUNCTION setup_changed_by_org() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A row of an organization's setup (organization_id) changed: bump its
    -- organization, and the one it moved to.
    IF TG_OP <> 'INSERT' THEN
        PERFORM setup_bump(OLD.organization_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE'
            AND NEW.organization_id IS DISTINCT FROM OLD.organization_id) THEN
        PERFORM setup_bump(NEW.organization_id);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION setup_version_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.setup_version < OLD.setup_version THEN
        NEW.setup_version := OLD.setup_version;
    END IF;
    IF NEW.timezone IS DISTINCT FROM OLD.timezone
            AND NEW.setup_version = OLD.setup_version THEN
        NEW.setup_version := OLD.setup_version + 1;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER setup_version_kept BEFORE UPDATE ON {org}
    FOR EACH ROW EXECUTE FUNCTION setup_version_kept();
CREATE TRIGGER setup_profile_renamed AFTER UPDATE ON {profile} FOR EACH ROW
    WHEN (NEW.external_id IS DISTINCT FROM OLD.external_id
          OR NEW.organization_id IS DISTINCT FROM OLD.organization_id
          OR NEW.active IS DISTINCT FROM OLD.active)
    EXECUTE FUNCTION setup_changed_by_org();
CREATE TRIGGER setup_profile_deleted AFTER DELETE ON {profile}
    FOR EACH ROW EXECUTE FUNCTION setup_changed_by_org();
"""

UNBUMP = """
DROP TRIGGER IF EXISTS setup_profile_deleted ON {profile};
DROP TRIGGER IF EXISTS setup_profile_renamed ON {profile};
DROP TRIGGER IF EXISTS setup_version_kept ON {org};
DROP FUNCTION IF EXISTS setup_version_kept();
DROP FUNCTION IF EXISTS setup_changed_by_org();
DROP FUNCTION IF EXISTS setup_bump(uuid);
"""


class Migration(migrations.Migration):
    dependencies = [("profiles", "0002_apikey_rate_limit_per_minute")]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="setup_version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        postgresql_only(BUMP, UNBUMP, org="profiles.Organization", profile="profiles.Profile"),
    ]
