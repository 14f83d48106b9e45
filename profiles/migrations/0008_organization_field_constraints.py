"""The organization fields' rules (0005-0006) in the database as well.

Rows saved before those rules may break them, so they are mended first, each
to the value that means what the old one did or, where nothing does, to the
field's default:
- a spike_min_cost below 0 ignored no spike, as 0 does: 0;
- a spike_factor of 1 or less alerted on ordinary days: the default, 3;
- a currency in small letters or with spaces: in capitals; one that is still
  no ISO 4217 code: the default, USD (the code is a label on amounts, which
  are priced in the catalog's currency whatever it says).

The codes are those of profiles.currencies as of this migration, written out
here so that the migration does the same whenever it runs.
"""

from django.db import migrations, models

CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL
    BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF
    DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG
    HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
    LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN
    NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG
    SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD
    XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG ZWL
""".split()


def mend(apps, schema_editor):
    Organization = apps.get_model("profiles", "Organization")
    Organization.objects.filter(spike_min_cost__lt=0).update(spike_min_cost=0)
    Organization.objects.filter(spike_factor__lte=1).update(spike_factor=3)
    for org in Organization.objects.exclude(currency__in=CODES).only("pk", "currency"):
        code = org.currency.strip().upper()
        Organization.objects.filter(pk=org.pk).update(currency=code if code in CODES else "USD")


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0007_organization_alert_emails_addresses"),
    ]

    operations = [
        migrations.RunPython(mend, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="organization",
            constraint=models.CheckConstraint(
                condition=models.Q(("currency__in", CODES)), name="org_currency_code"
            ),
        ),
        migrations.AddConstraint(
            model_name="organization",
            constraint=models.CheckConstraint(
                condition=models.Q(("spike_factor__gt", 1)), name="org_spike_factor_above_one"
            ),
        ),
        migrations.AddConstraint(
            model_name="organization",
            constraint=models.CheckConstraint(
                condition=models.Q(("spike_min_cost__gte", 0)),
                name="org_spike_min_cost_non_negative",
            ),
        ),
    ]
