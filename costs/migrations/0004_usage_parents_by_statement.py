"""The ledger's references to its parents, checked once per statement.

A foreign key checks each inserted row on its own: five lookups (organization,
profile, key, model, price) per ledger row, a third of the database's work in a
1,000-event batch that names one organization, one key and a handful of the
rest. Here one statement-level trigger takes the distinct parents the
statement's rows name, locks them FOR KEY SHARE (as a foreign key check does,
in id order) and refuses the statement with a foreign_key_violation naming the
first missing one, in PostgreSQL's own words (``profile_vanished`` reads them).
On the parent's side, a deferred constraint trigger per parent table refuses
to delete (or re-key) a row the ledger still names, at commit, as the foreign
keys' NO ACTION did. What the constraints gave, the triggers give: no ledger
row names a parent that is not there.

The difference: the rows' parents are locked when the statement that writes
them ends, not at commit, so whoever deletes a parent locks it first (see
``costs.signals`` and ``profiles_delete``), and the one-statement event locks
its parents before its rollup and counters (``ledger_insert_one_sql``).
"""

from django.db import migrations, models
import django.db.models.deletion

from config.migration_sql import postgresql_only

# (ledger column, parent model) in the order the parents are locked.
PARENTS = [
    ("organization_id", "org"),
    ("profile_id", "profile"),
    ("api_key_id", "api_key"),
    ("ai_model_id", "ai_model"),
    ("price_id", "price"),
]


def _child_sql() -> str:
    ctes = []
    missing = []
    for i, (column, table) in enumerate(PARENTS):
        ctes.append(
            f"w{i} AS (SELECT DISTINCT {column} AS id FROM new_rows WHERE {column} IS NOT NULL), "
            f"l{i} AS (SELECT t.id FROM {{{table}}} t JOIN w{i} USING (id) "
            f"ORDER BY t.id FOR KEY SHARE OF t)"
        )
        missing.append(
            f"SELECT '{column}' AS col, w{i}.id::text AS val, '{{{table}}}' AS tab "
            f"FROM w{i} WHERE w{i}.id NOT IN (SELECT id FROM l{i})"
        )
    return f"""
CREATE FUNCTION usage_parents_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- The distinct parents the statement's rows name, each locked FOR KEY
    -- SHARE (a branch runs whole unless an earlier one found a missing row).
    WITH {", ".join(ctes)}
    SELECT m.col, m.val, m.tab INTO bad FROM (
        {" UNION ALL ".join(missing)}
    ) m LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION
            'insert or update on table "{{usage}}" violates foreign key constraint "usage_%_parent"',
            bad.col
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (%s)=(%s) is not present in table "%s".',
                                  bad.col, bad.val, bad.tab),
                  TABLE = '{{usage}}',
                  COLUMN = bad.col,
                  CONSTRAINT = 'usage_' || bad.col || '_parent';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_parents_inserted AFTER INSERT ON {{usage}}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_parents_check();
CREATE TRIGGER usage_parents_updated AFTER UPDATE ON {{usage}}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_parents_check();
"""


PARENT_SQL = """
CREATE FUNCTION usage_parent_gone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NULL;
    END IF;
    -- At commit, with a snapshot taken now: a writer that locked this row
    -- (FOR KEY SHARE) before it was deleted has committed by now.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM {usage} WHERE %I = $1)', TG_ARGV[0])
        INTO named USING OLD.id;
    IF named THEN
        RAISE EXCEPTION
            'update or delete on table "%" violates foreign key constraint "usage_%_parent" on table "{usage}"',
            TG_TABLE_NAME, TG_ARGV[0]
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (id)=(%s) is still referenced from table "{usage}".', OLD.id),
                  TABLE = TG_TABLE_NAME,
                  CONSTRAINT = 'usage_' || TG_ARGV[0] || '_parent';
    END IF;
    RETURN NULL;
END $$;
""" + "".join(
    f"""
CREATE CONSTRAINT TRIGGER usage_parent_gone AFTER DELETE OR UPDATE OF id ON {{{table}}}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION usage_parent_gone('{column}');
"""
    for column, table in PARENTS
)

UNDO = (
    "".join(f"DROP TRIGGER IF EXISTS usage_parent_gone ON {{{table}}};\n" for _, table in PARENTS)
    + """
DROP FUNCTION IF EXISTS usage_parent_gone();
DROP TRIGGER IF EXISTS usage_parents_inserted ON {usage};
DROP TRIGGER IF EXISTS usage_parents_updated ON {usage};
DROP FUNCTION IF EXISTS usage_parents_check();
"""
)

TABLES = {
    "usage": "costs.UsageEvent",
    "org": "profiles.Organization",
    "profile": "profiles.Profile",
    "api_key": "profiles.ApiKey",
    "ai_model": "costs.AIModel",
    "price": "costs.Price",
}


class Migration(migrations.Migration):
    dependencies = [
        ("costs", "0003_price_setup_version"),
        ("profiles", "0003_organization_setup_version"),
    ]

    operations = [
        migrations.AlterField(
            model_name="usageevent",
            name="organization",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="profiles.organization",
            ),
        ),
        migrations.AlterField(
            model_name="usageevent",
            name="profile",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="profiles.profile",
            ),
        ),
        migrations.AlterField(
            model_name="usageevent",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="profiles.apikey",
            ),
        ),
        migrations.AlterField(
            model_name="usageevent",
            name="ai_model",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="costs.aimodel",
            ),
        ),
        migrations.AlterField(
            model_name="usageevent",
            name="price",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="costs.price",
            ),
        ),
        postgresql_only(_child_sql() + PARENT_SQL, UNDO, **TABLES),
    ]
