"""What other apps hear of changes to tenants (profiles must not import them)."""

from django.dispatch import Signal

# Sent inside the transaction that changes an organization's time zone, its
# row locked and not yet written (profiles.services.organization_save), with
# ``organization`` (holding the new zone) and ``previous`` (the old zone's
# name): what is reckoned in local days (budget periods) follows it there.
timezone_changed = Signal()
