"""Checks an AAS JSON environment with aas-core3.0 (the aas-core-works SDK,
written by nobody here): deserialise it, then run every constraint of the
metamodel. Prints each error; exit status 1 when there is any.

Usage: verify_environment.py ENVIRONMENT.json
"""
import json
import sys

import aas_core3.jsonization as jsonization
import aas_core3.verification as verification


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        jsonable = json.load(f)
    try:
        env = jsonization.environment_from_jsonable(jsonable)
    except jsonization.DeserializationException as e:
        print(f"deserialisation failed at {e.path}: {e.cause}")
        return 1
    errors = list(verification.verify(env))
    for e in errors:
        print(f"{e.path}: {e.cause}")
    shells = len(env.asset_administration_shells or [])
    submodels = len(env.submodels or [])
    print(f"{len(errors)} errors; {shells} shells, {submodels} submodels")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
