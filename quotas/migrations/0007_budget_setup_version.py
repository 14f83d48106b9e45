"""A budget created, changed or deleted, or a period row moved or deleted,
bumps its organization's ``setup_version`` (profiles/migrations/0003)."""

from django.db import migrations

from config.migration_sql import postgresql_only

BUMP = """
CREATE OR REPLACE FUNCTION setup_period_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM setup_bump(b.organization_id) FROM {budget} b WHERE b.id = OLD.budget_id;
    IF TG_OP = 'UPDATE' AND NEW.budget_id IS DISTINCT FROM OLD.budget_id THEN
        PERFORM setup_bump(b.organization_id) FROM {budget} b WHERE b.id = NEW.budget_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER setup_budget_changed AFTER INSERT OR UPDATE OR DELETE ON {budget}
    FOR EACH ROW EXECUTE FUNCTION setup_changed_by_org();
CREATE TRIGGER setup_period_moved AFTER UPDATE ON {period} FOR EACH ROW
    WHEN (NEW.budget_id IS DISTINCT FROM OLD.budget_id OR NEW.start IS DISTINCT FROM OLD.start
          OR NEW."end" IS DISTINCT FROM OLD."end")
    EXECUTE FUNCTION setup_period_changed();
CREATE TRIGGER setup_period_deleted AFTER DELETE ON {period}
    FOR EACH ROW EXECUTE FUNCTION setup_period_changed();
"""

UNBUMP = """
DROP TRIGGER IF EXISTS setup_period_deleted ON {period};
DROP TRIGGER IF EXISTS setup_period_moved ON {period};
DROP TRIGGER IF EXISTS setup_budget_changed ON {budget};
DROP FUNCTION IF EXISTS setup_period_changed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0006_budget_provider_lower_case"),
        ("profiles", "0003_organization_setup_version"),
    ]

    operations = [postgresql_only(BUMP, UNBUMP, budget="quotas.Budget", period="quotas.BudgetPeriod")]
