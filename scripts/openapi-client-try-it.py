"""The README's "Try it" steps through a client that openapi-python-client generated from the
node's own OpenAPI document (scripts/openapi-check.sh puts it on PYTHONPATH as `client`).
Usage: openapi-client-try-it.py BASE_URL TOKEN"""
import sys

from client import AuthenticatedClient, Client
from client.api.accounts import (accounts_events, credit_account, debit_account, get_account,
                                 open_account)
from client.api.health import full as health
from client.models import AccountView, AmountRequest, OpenAccountRequest, Problem

base, token = sys.argv[1], sys.argv[2]
alice = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)


def check(what, condition, got):
    if not condition:
        sys.exit(f"{what}: got {got!r}")


report = health.sync_detailed(client=Client(base_url=base))
check("health", report.status_code == 200, report)

opened = open_account.sync_detailed(
    client=alice, body=OpenAccountRequest(owner="alice", initial_balance=10000))
check("open", opened.status_code == 201 and isinstance(opened.parsed, AccountView), opened)
account = opened.parsed.id

for attempt in range(2):
    # Sent twice with one key: applied once, and the second answer is the first.
    credited = credit_account.sync_detailed(
        id=account, client=alice, body=AmountRequest(amount=2500),
        idempotency_key=f"salary-{account}")
    check(f"credit {attempt}", credited.status_code == 200 and credited.parsed.balance == 12500,
          credited)

debited = debit_account.sync_detailed(id=account, client=alice, body=AmountRequest(amount=4000))
check("debit", debited.status_code == 200 and debited.parsed.balance == 8500, debited)

refused = debit_account.sync_detailed(id=account, client=alice, body=AmountRequest(amount=1000000))
check("debit too much", refused.status_code == 409 and isinstance(refused.parsed, Problem)
      and refused.parsed.type_ == "urn:playhouse:problem:insufficient-funds", refused)

history = accounts_events.sync_detailed(id=account, client=alice)
types = [event.type_ for event in history.parsed.events]
check("events", types == ["AccountOpened", "AccountCredited", "AccountDebited"], types)

anonymous = get_account.sync_detailed(id=account, client=Client(base_url=base))
check("no token", anonymous.status_code == 401, anonymous)

print(f"generated client: opened {account}, credited once with a key sent twice, debited, "
      "refused an overdraft, read 3 events, and was refused without a token")
