"""The Python caldav library (PyPI, 3.x) against ferrymail's CalDAV: discovery, a new
calendar, a recurring event with a moved and a cancelled instance, a todo, server-side
time-range searches (no client-side filtering), multiget, free-busy, sync tokens across a change and
a deletion, a wrong password. Usage: caldav_client.py URL ACCOUNT PASSWORD CA_FILE"""

import datetime
import sys
import warnings

import caldav
from caldav.lib import error

warnings.simplefilter("ignore")
url, account, password, ca = sys.argv[1:5]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


client = caldav.DAVClient(url=url, username=account, password=password, ssl_verify_cert=ca)
principal = client.principal()
names = [c.name for c in principal.calendars()]
check(names == ["Calendar"], f"a new account has one calendar, Calendar: {names}")

work = principal.make_calendar(name="Work", cal_id="work")
check("Work" in [c.name for c in principal.calendars()], "the new calendar is listed")

STANDUP = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//ferrymail tests//EN
BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:STANDARD
DTSTART:19701025T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
UID:standup@ferrymail.test
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Berlin:20260105T100000
DURATION:PT30M
RRULE:FREQ=WEEKLY;COUNT=5
EXDATE;TZID=Europe/Berlin:20260119T100000
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:standup@ferrymail.test
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Berlin:20260112T100000
DTSTART;TZID=Europe/Berlin:20260114T150000
DURATION:PT30M
SUMMARY:Standup (moved to Wednesday)
END:VEVENT
END:VCALENDAR
"""
standup = work.save_event(STANDUP)
review = work.save_event(
    dtstart=datetime.datetime(2026, 2, 20, 9, 0, tzinfo=datetime.timezone.utc),
    dtend=datetime.datetime(2026, 2, 20, 10, 0, tzinfo=datetime.timezone.utc),
    summary="Review",
    uid="review@ferrymail.test",
)
todo = work.save_todo(summary="Write the agenda", uid="agenda@ferrymail.test")


def found(start, end):
    hits = work.search(
        start=datetime.datetime(*start, tzinfo=datetime.timezone.utc),
        end=datetime.datetime(*end, tzinfo=datetime.timezone.utc),
        event=True,
        expand=False,
        post_filter=False,
    )
    return sorted(str(h.icalendar_component["UID"]) for h in hits)


# Monday 12 Jan: the instance moved away; Wednesday 14 Jan: where it went.
check(found((2026, 1, 12), (2026, 1, 13)) == [], "nothing left on Monday 12 Jan")
check(found((2026, 1, 14), (2026, 1, 15)) == ["standup@ferrymail.test"], "the moved instance")
check(found((2026, 1, 19), (2026, 1, 20)) == [], "the cancelled instance")
check(found((2026, 2, 2), (2026, 2, 3)) == ["standup@ferrymail.test"], "the fifth instance")
check(found((2026, 2, 9), (2026, 2, 10)) == [], "past COUNT")
check(
    found((2026, 1, 1), (2026, 3, 1)) == ["review@ferrymail.test", "standup@ferrymail.test"],
    "both events in two months",
)
check(len(work.todos()) == 1, "one todo")

got = work.calendar_multiget([standup.url, review.url])
summaries = sorted(str(e.icalendar_component["SUMMARY"]) for e in got)
check(summaries == ["Review", "Standup"], f"multiget: {summaries}")

first = work.get_objects_by_sync_token(load_objects=False, disable_fallback=True)
check(len(list(first)) == 3, "an initial sync lists the three objects")
token = first.sync_token
review.icalendar_component["SUMMARY"] = "Review (room 2)"
review.save()
todo.delete()
later = work.get_objects_by_sync_token(
    sync_token=token, load_objects=False, disable_fallback=True
)
changed = sorted(str(o.url).rsplit("/", 1)[1] for o in later)
expected = sorted(str(o.url).rsplit("/", 1)[1] for o in [review, todo])
check(changed == expected, f"the change and the deletion since the token: {changed}")
check(later.sync_token != token, "a new token")
again = work.get_objects_by_sync_token(
    sync_token=later.sync_token, load_objects=False, disable_fallback=True
)
check(len(list(again)) == 0, "nothing since the newest token")

try:
    caldav.DAVClient(url=url, username=account, password="wrong", ssl_verify_cert=ca).principal()
    check(False, "a wrong password is refused")
except error.AuthorizationError:
    pass

# free-busy-query (RFC 4791 §7.10): the moved instance counts where it went, the
# cancelled one not at all.
busy = work.freebusy_request(
    datetime.datetime(2026, 1, 5, tzinfo=datetime.timezone.utc),
    datetime.datetime(2026, 1, 20, tzinfo=datetime.timezone.utc),
)
text = busy.data.replace("\r\n", "\n")
check("FREEBUSY:20260105T090000Z/20260105T093000Z" in text, f"the first instance busy: {text}")
check("FREEBUSY:20260114T140000Z/20260114T143000Z" in text, f"the moved instance: {text}")
check("20260112T09" not in text and "20260119T" not in text, f"no moved or cancelled: {text}")

work.delete()
check([c.name for c in principal.calendars()] == ["Calendar"], "the deleted calendar is gone")
print("all done")
