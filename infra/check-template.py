#!/usr/bin/env python3
"""Checks infra/template.yaml by reading it: what the template declares, for what moto
cannot show by deploying it (moto's CloudFormation ignores a bucket's notification, and
evaluates no IAM condition).

    /var/tmp/squall-cfn-lint-venv/bin/python infra/check-template.py infra/template.yaml

The template is read with cfn-lint's own decoder (the short forms `!Ref`, `!GetAtt`,
`!Sub` become their long forms). Each check prints one line, `ok` or `FAIL` with what
was found; the exit status is 1 when any check failed, 2 on a usage error.

Checks:
- notification: the bucket sends `s3:ObjectCreated:*` under the `UploadPrefix` parameter
  to the launcher function (its ARN), the function may be invoked by S3 for this bucket
  only, and the launcher maps that same prefix to the upload playbook.
"""

import json
import sys

from cfnlint.decode import decode


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    template, problems = decode(argv[1])
    if problems or template is None:
        for p in problems:
            print(f"FAIL decode: {p}")
        return 1
    failed = 0
    for name, check in CHECKS:
        errors = check(template)
        if errors:
            failed += 1
            for e in errors:
                print(f"FAIL {name}: {e}")
        else:
            print(f"ok {name}")
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} template checks passed")
    return 1 if failed else 0


def resources(template, kind):
    return {
        name: r
        for name, r in template.get("Resources", {}).items()
        if r.get("Type") == kind
    }


def show(v):
    return json.dumps(v, default=str, sort_keys=True)


def check_notification(t):
    errors = []
    buckets = resources(t, "AWS::S3::Bucket")
    functions = resources(t, "AWS::Lambda::Function")
    if len(buckets) != 1 or len(functions) != 1:
        return [f"expected one bucket and one function, found {list(buckets)} and {list(functions)}"]
    (bucket, b), (function, f) = next(iter(buckets.items())), next(iter(functions.items()))
    configs = (
        b.get("Properties", {})
        .get("NotificationConfiguration", {})
        .get("LambdaConfigurations", [])
    )
    if len(configs) != 1:
        errors.append(f"expected one Lambda notification on {bucket}, found {show(configs)}")
    for c in configs:
        if c.get("Event") != "s3:ObjectCreated:*":
            errors.append(f"the notification's event is {show(c.get('Event'))}")
        if c.get("Function") != {"Fn::GetAtt": [function, "Arn"]}:
            errors.append(f"the notification targets {show(c.get('Function'))}, not {function}'s ARN")
        rules = c.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        prefixes = [r.get("Value") for r in rules if r.get("Name") == "prefix"]
        if prefixes != [{"Ref": "UploadPrefix"}]:
            errors.append(f"the notification's prefix filter is {show(rules)}, not the UploadPrefix parameter")
    if "UploadPrefix" not in t.get("Parameters", {}):
        errors.append("no UploadPrefix parameter")
    permissions = [
        p.get("Properties", {})
        for p in resources(t, "AWS::Lambda::Permission").values()
        if p.get("Properties", {}).get("Principal") == "s3.amazonaws.com"
    ]
    if len(permissions) != 1:
        errors.append(f"expected one permission for s3.amazonaws.com, found {len(permissions)}")
    for p in permissions:
        if p.get("FunctionName") not in ({"Ref": function}, {"Fn::GetAtt": [function, "Arn"]}):
            errors.append(f"S3 may invoke {show(p.get('FunctionName'))}, not {function}")
        if p.get("Action") != "lambda:InvokeFunction":
            errors.append(f"the S3 permission grants {show(p.get('Action'))}")
        if "SourceArn" not in p or "SourceAccount" not in p:
            errors.append("the S3 permission is not limited to this bucket and account")
    uploads = (
        f.get("Properties", {})
        .get("Environment", {})
        .get("Variables", {})
        .get("SQUALL_UPLOADS")
    )
    if uploads != {"Fn::Sub": "${UploadPrefix}=${UploadPlaybook}"}:
        errors.append(f"the launcher's SQUALL_UPLOADS is {show(uploads)}, not UploadPrefix=UploadPlaybook")
    return errors


CHECKS = [
    ("notification", check_notification),
]

if __name__ == "__main__":
    sys.exit(main(sys.argv))
