"""Reads a DMARC aggregate report with parsedmarc (a second implementation), offline:
dmarc_parse.py FILE, where FILE is the report mail (.eml) or its XML. Prints JSON: the
organisation, the domain, and per record the source IP, count, disposition, the aligned
DKIM and SPF results and the SPF auth result."""
import json
import sys

import parsedmarc

path = sys.argv[1]
data = open(path, "rb").read()
options = {"offline": True, "always_use_local_files": True}
if path.endswith(".eml"):
    parsed = parsedmarc.parse_report_email(data, **options)
    assert parsed["report_type"] == "aggregate", parsed["report_type"]
    report = parsed["report"]
else:
    report = parsedmarc.parse_aggregate_report_xml(data, **options)
records = []
for r in report["records"]:
    records.append(
        {
            "ip": r["source"]["ip_address"],
            "count": r["count"],
            "disposition": r["policy_evaluated"]["disposition"],
            "dkim": r["policy_evaluated"]["dkim"],
            "spf": r["policy_evaluated"]["spf"],
            "spf_auth": [s["result"] for s in r["auth_results"]["spf"]],
            "header_from": r["identifiers"]["header_from"],
        }
    )
print(
    json.dumps(
        {
            "org": report["report_metadata"]["org_name"],
            "domain": report["policy_published"]["domain"],
            "p": report["policy_published"]["p"],
            "records": sorted(records, key=lambda r: (r["ip"], r["header_from"])),
        }
    )
)
