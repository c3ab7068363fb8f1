"""Checks a JSON document (or each document of a JSON array) against a JSON schema with
the jsonschema library: SCHEMA FILE. Prints every error and exits 1 on any."""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
document = json.load(open(sys.argv[2]))
validator = jsonschema.Draft202012Validator(schema)
errors = []
for item in document if isinstance(document, list) else [document]:
    errors.extend(validator.iter_errors(item))
for e in errors:
    print(f"{list(e.absolute_path)}: {e.message}")
if errors:
    sys.exit(1)
print("valid")
