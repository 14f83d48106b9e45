"""The ledger's references to its parents, checked once per statement and
locked at commit.

A foreign key checks each inserted row on its own: five lookups (organization,
profile, key, model, price) per ledger row, a third of the database's work in a
1,000-event batch that names one organization, one key and a handful of the
rest. Instead:

- after each INSERT or UPDATE statement on the ledger, a statement-level
  trigger puts the distinct parents the statement's rows name (for an UPDATE,
  those a row changed to) in one row of a temporary table of the session,
  created on first use, ``ledger_parents_due`` (ON COMMIT DELETE ROWS);
- at commit, a deferred constraint trigger on that row locks those parents
  FOR KEY SHARE, in id order, and refuses the transaction with a
  foreign_key_violation naming the first missing one, in PostgreSQL's own
  words (``profile_vanished`` reads them): when and how the deferred foreign
  keys locked them, so every lock is taken in the order it was before;
- on each parent table a deferred constraint trigger refuses, at commit, to
  delete (or re-key) a row the ledger still names, as NO ACTION did, and a
  statement trigger refuses a TRUNCATE that leaves ledger rows naming it.

The parent side reads the ledger with a snapshot taken at commit, which only
READ COMMITTED gives a trigger: deleting or truncating a parent in a
REPEATABLE READ or SERIALIZABLE transaction is refused (serialization_failure).

What differs from the foreign keys: a transaction that writes the ledger uses
a temporary table, so it cannot PREPARE TRANSACTION (two-phase commit); the
writing role needs the TEMPORARY privilege and UPDATE on the parent tables
(FOR KEY SHARE), where a foreign key's check ran as the tables' owner; an
UPDATE of the ledger keeps its old and new rows until the statement ends,
whether or not it changes a reference.
"""

from django.db import migrations, models
import django.db.models.deletion

from config.migration_sql import postgresql_only

# (ledger column, parent model, its id's type) in the order the parents are locked.
PARENTS = [
    ("organization_id", "org", "uuid"),
    ("profile_id", "profile", "uuid"),
    ("api_key_id", "api_key", "uuid"),
    ("ai_model_id", "ai_model", "bigint"),
    ("price_id", "price", "uuid"),
]


def _due(changed: bool) -> str:
    """The INSERT of the statement's parents into ledger_parents_due: for an
    UPDATE (``changed``), only the references a row changed; none when there
    are none."""
    if changed:
        source = "new_rows n LEFT JOIN old_rows o USING (id)"  # a new id: all changed
        kept = "n.{c} IS DISTINCT FROM o.{c} AND n.{c} IS NOT NULL"
    else:
        source = "new_rows n"
        kept = "n.{c} IS NOT NULL"
    picks = ", ".join(
        f"array_agg(DISTINCT n.{c}) FILTER (WHERE {kept.format(c=c)}) AS c{i}"
        for i, (c, _, _) in enumerate(PARENTS)
    )
    names = ", ".join(f"c{i}" for i in range(len(PARENTS)))
    return (
        f"INSERT INTO pg_temp.ledger_parents_due SELECT * FROM (SELECT {picks} FROM {source}) a "
        f"WHERE num_nonnulls({names}) > 0"
    )


def _child_sql() -> str:
    columns = ", ".join(f"{c} {t}[]" for c, _, t in PARENTS)
    checks = "\n".join(
        f"""
    SELECT count(*) INTO locked FROM (
        SELECT FROM {{{table}}} t WHERE t.id = ANY(NEW.{column}) ORDER BY t.id FOR KEY SHARE
    ) l;
    IF locked < coalesce(cardinality(NEW.{column}), 0) THEN
        -- Missing, and still named: a row may have let go of it since (a
        -- profile's deletion sets its rows' profile to NULL first).
        SELECT w INTO missing FROM unnest(NEW.{column}) w
            WHERE NOT EXISTS (SELECT FROM {{{table}}} t WHERE t.id = w)
              AND EXISTS (SELECT FROM {{usage}} u WHERE u.{column} = w) LIMIT 1;
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION
            'insert or update on table "{{usage}}" violates foreign key constraint "usage_{column}_parent"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key ({column})=(%s) is not present in table "{{{table}}}".', missing),
                  TABLE = '{{usage}}',
                  COLUMN = '{column}',
                  CONSTRAINT = 'usage_{column}_parent';
    END IF;"""
        for column, table, _ in PARENTS
    )
    return f"""
CREATE FUNCTION usage_parents_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The table and its check, made on the session's first write; the check
    -- again if it went (dropping usage_parents_check() drops it in every session).
    IF NOT EXISTS (SELECT FROM pg_trigger
                   WHERE tgrelid = to_regclass('pg_temp.ledger_parents_due')
                     AND tgname = 'usage_parents_check') THEN
        CREATE TEMP TABLE IF NOT EXISTS ledger_parents_due ({columns}) ON COMMIT DELETE ROWS;
        CREATE CONSTRAINT TRIGGER usage_parents_check AFTER INSERT ON pg_temp.ledger_parents_due
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION usage_parents_check();
    END IF;
    IF TG_OP = 'INSERT' THEN
        {_due(changed=False)};
    ELSE
        {_due(changed=True)};
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION usage_parents_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    locked bigint;
    missing text;
BEGIN{checks}
    RETURN NULL;
END $$;

CREATE TRIGGER usage_parents_inserted AFTER INSERT ON {{usage}}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_parents_due();
CREATE TRIGGER usage_parents_updated AFTER UPDATE ON {{usage}}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_parents_due();
"""


PARENT_SQL = """
CREATE FUNCTION usage_parent_gone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'delete from "%" in a READ COMMITTED transaction', TG_TABLE_NAME
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'Whether the ledger still names the row is read at commit.';
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

CREATE FUNCTION usage_parent_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'truncate "%" in a READ COMMITTED transaction', TG_TABLE_NAME
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'Whether the ledger still names its rows is read after it.';
    END IF;
    -- After the TRUNCATE: one that emptied the ledger too is fine.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM {usage} WHERE %I IS NOT NULL)', TG_ARGV[0])
        INTO named;
    IF named THEN
        RAISE EXCEPTION 'cannot truncate a table referenced in a foreign key constraint'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Table "{usage}" references "%s".', TG_TABLE_NAME),
                  HINT = 'Truncate table "{usage}" at the same time.';
    END IF;
    RETURN NULL;
END $$;
""" + "".join(
    f"""
CREATE CONSTRAINT TRIGGER usage_parent_gone AFTER DELETE OR UPDATE OF id ON {{{table}}}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION usage_parent_gone('{column}');
CREATE TRIGGER usage_parent_truncated AFTER TRUNCATE ON {{{table}}}
    FOR EACH STATEMENT EXECUTE FUNCTION usage_parent_truncated('{column}');
"""
    for column, table, _ in PARENTS
)

UNDO = (
    "".join(
        f"DROP TRIGGER IF EXISTS usage_parent_gone ON {{{table}}};\n"
        f"DROP TRIGGER IF EXISTS usage_parent_truncated ON {{{table}}};\n"
        for _, table, _ in PARENTS
    )
    + """
DROP FUNCTION IF EXISTS usage_parent_gone();
DROP FUNCTION IF EXISTS usage_parent_truncated();
DROP TRIGGER IF EXISTS usage_parents_inserted ON {usage};
DROP TRIGGER IF EXISTS usage_parents_updated ON {usage};
DROP FUNCTION IF EXISTS usage_parents_due();
DROP FUNCTION IF EXISTS usage_parents_check() CASCADE;
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
