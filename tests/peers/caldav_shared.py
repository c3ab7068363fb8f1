"""The Python caldav library as a mailbox a calendar is shared with: it finds "Team" among
its own calendars, reads what the owner put there, and adds an event of its own.
Usage: caldav_shared.py URL ACCOUNT PASSWORD CA_FILE"""

import datetime
import sys
import warnings

import caldav

warnings.simplefilter("ignore")
url, account, password, ca = sys.argv[1:5]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


client = caldav.DAVClient(url=url, username=account, password=password, ssl_verify_cert=ca)
calendars = {c.name: c for c in client.principal().calendars()}
check(set(calendars) == {"Calendar", "Team"}, f"its own calendar and the shared one: {list(calendars)}")
team = calendars["Team"]
hits = team.search(
    start=datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc),
    end=datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc),
    event=True,
    expand=False,
    post_filter=False,
)
check([str(h.icalendar_component["UID"]) for h in hits] == ["trip"], "the owner's event")
team.save_event(
    dtstart=datetime.datetime(2026, 3, 5, 9, 0, tzinfo=datetime.timezone.utc),
    dtend=datetime.datetime(2026, 3, 5, 10, 0, tzinfo=datetime.timezone.utc),
    summary="Added by a colleague",
    uid="colleague@ferrymail.test",
)
check(len(team.events()) == 2, "both events")
print("all done")
