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
- upload-read: the master and the launcher may read the upload prefix (so a run can
  read the object that started it), that prefix only: no statement grants GetObject on
  the whole bucket.
- cache-lifecycle: entries under `cache/` expire after the `CacheDays` parameter (30 by
  default), by a lifecycle rule moto's CloudFormation does not apply.
- worker-role: the workers' role exists only when `WorkerDataPrefix` is set (off by
  default), reaches S3 under that prefix only, and the master may pass that role (to EC2)
  and no other.
- succession: what a run that outlives its master needs, and nothing wider. Only the
  master role may read a run's login key (`ssm:GetParameter` on
  `parameter/squall/runs/*`, which it also puts and deletes); the launcher may only
  delete it. Watchdog schedules (`schedule/default/squall-*`) are created, read and
  deleted by the launcher and deleted by the master; no ssm: or scheduler: action is
  granted on `*`. `SchedulerRole` is assumed by scheduler.amazonaws.com for this account
  only, may only invoke the launcher function, and is passed (to the scheduler only) by
  the launcher, whose environment names the function and that role.
- stack-scope: every RunInstances statement on instances and volumes requires the
  request to tag them `squall:stack` = this stack's name, and every TerminateInstances
  statement only ends instances so tagged, in both roles; the launcher's environment
  names the stack (`SQUALL_STACK`), which the launcher and the master tag every
  instance with.
- secrets-scope: playbooks' `ssm:` secrets are read by the master role only
  (`ssm:GetParameter` on `parameter${SecretsPrefix}*`), the launcher's environment names
  that prefix (it refuses a secret outside it), and `SecretsPrefix` refuses `*`, `/`
  alone, `/squall/` and the runs' own `/squall/runs/` (login keys); tried on sample
  values.
- dead-letters: the launcher function keeps the events it gave up on
  (`DeadLetterConfig` to an SQS queue of the stack, which its role may send to and
  nothing more), Lambda retries an event exactly twice (the run's three launch
  attempts), `SQUALL_STALE_CLAIM` stays above the function's timeout (and below a
  minute more, when Lambda's first retry comes) and
  `SQUALL_LAUNCH_BUDGET` at least 50 s below it (the time to note a failure, look for
  a master and write a record).
- prefix-patterns: `UploadPrefix` and `WorkerDataPrefix` refuse squall's own prefixes
  (runs/, bin/, playbooks/, cache/) and `*` (an IAM wildcard in the statements built
  from them), and accept ordinary prefixes; tried on sample values.
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


def statements_of(t, policy_resource):
    props = t.get("Resources", {}).get(policy_resource, {}).get("Properties", {})
    return props.get("PolicyDocument", {}).get("Statement", [])


def as_list(v):
    return v if isinstance(v, list) else [v]


def check_upload_read(t):
    errors = []
    upload = {"Fn::Sub": "${DataBucket.Arn}/${UploadPrefix}*"}
    whole = [{"Fn::Sub": "${DataBucket.Arn}/*"}, "*"]
    for policy in ("MasterBucketAccess", "LauncherBucketAccess"):
        reads = [
            r
            for st in statements_of(t, policy)
            if st.get("Effect") == "Allow" and "s3:GetObject" in as_list(st.get("Action"))
            for r in as_list(st.get("Resource"))
        ]
        if upload not in reads:
            errors.append(f"{policy} does not read {show(upload)}: {show(reads)}")
        for r in reads:
            if r in whole:
                errors.append(f"{policy} reads the whole bucket: {show(r)}")
    return errors


def check_cache_lifecycle(t):
    errors = []
    param = t.get("Parameters", {}).get("CacheDays")
    if not param or str(param.get("Default")) != "30":
        errors.append(f"CacheDays parameter with default 30 expected, found {show(param)}")
    buckets = resources(t, "AWS::S3::Bucket")
    rules = [
        r
        for b in buckets.values()
        for r in b.get("Properties", {}).get("LifecycleConfiguration", {}).get("Rules", [])
    ]
    cache = [r for r in rules if r.get("Prefix") == "cache/"]
    if len(cache) != 1:
        return errors + [f"expected one lifecycle rule on cache/, found {show(rules)}"]
    r = cache[0]
    if r.get("Status") != "Enabled" or r.get("ExpirationInDays") != {"Ref": "CacheDays"}:
        errors.append(f"the cache rule is {show(r)}, not enabled with ExpirationInDays CacheDays")
    return errors


def check_worker_role(t):
    errors = []
    res = t.get("Resources", {})
    cond = t.get("Conditions", {}).get("HasWorkerData")
    if cond != {"Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerDataPrefix"}, ""]}]}:
        errors.append(f"HasWorkerData is {show(cond)}, not WorkerDataPrefix != ''")
    param = t.get("Parameters", {}).get("WorkerDataPrefix", {})
    if param.get("Default") != "":
        errors.append(f"WorkerDataPrefix defaults to {show(param.get('Default'))}, not off")
    for name in ("WorkerRole", "WorkerInstanceProfile", "WorkerBucketAccess", "MasterPassesWorkerRole"):
        if res.get(name, {}).get("Condition") != "HasWorkerData":
            errors.append(f"{name} is not conditional on HasWorkerData")
    scoped = {"Fn::Sub": "${DataBucket.Arn}/${WorkerDataPrefix}*"}
    for st in statements_of(t, "WorkerBucketAccess"):
        actions = as_list(st.get("Action"))
        if not all(a.startswith("s3:") for a in actions):
            errors.append(f"the worker role does more than S3: {show(st)}")
        if actions == ["s3:ListBucket"]:
            prefix = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
            if prefix != {"Fn::Sub": "${WorkerDataPrefix}*"}:
                errors.append(f"the worker role lists beyond WorkerDataPrefix: {show(st)}")
        elif as_list(st.get("Resource")) != [scoped]:
            errors.append(f"the worker role reaches beyond WorkerDataPrefix: {show(st)}")
    passes = [
        (policy, st)
        for policy, r in res.items()
        if r.get("Type") == "AWS::IAM::Policy"
        and {"Ref": "MasterRole"} in as_list(r.get("Properties", {}).get("Roles", []))
        for st in statements_of(t, policy)
        if any(a.startswith("iam:") for a in as_list(st.get("Action")))
    ]
    inline = [
        st
        for pol in res.get("MasterRole", {}).get("Properties", {}).get("Policies", [])
        for st in pol.get("PolicyDocument", {}).get("Statement", [])
        if any(a.startswith("iam:") for a in as_list(st.get("Action")))
    ]
    if inline:
        errors.append(f"the master role's own policies have IAM actions: {show(inline)}")
    if len(passes) != 1:
        errors.append(f"expected one IAM statement for the master (passing the worker role), found {show(passes)}")
    for policy, st in passes:
        ok = (
            policy == "MasterPassesWorkerRole"
            and as_list(st.get("Action")) == ["iam:PassRole"]
            and as_list(st.get("Resource")) == [{"Fn::GetAtt": ["WorkerRole", "Arn"]}]
            and st.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") == "ec2.amazonaws.com"
        )
        if not ok:
            errors.append(f"the master may pass more than the worker role to EC2: {show(st)}")
    return errors


def role_statements(t, role):
    """Every statement of an IAM role's inline policies, with the policy's name."""
    props = t.get("Resources", {}).get(role, {}).get("Properties", {})
    return [
        (p.get("PolicyName"), st)
        for p in props.get("Policies", [])
        for st in p.get("PolicyDocument", {}).get("Statement", [])
    ]


def allowed(t, role, prefix):
    """(action, resource) pairs a role's inline policies allow for actions `prefix*`."""
    return {
        (a, show(r))
        for _, st in role_statements(t, role)
        if st.get("Effect") == "Allow"
        for a in as_list(st.get("Action"))
        if a.startswith(prefix)
        for r in as_list(st.get("Resource"))
    }


def check_succession(t):
    errors = []
    key = show({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/squall/runs/*"})
    sched = show({"Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/default/squall-*"})
    secrets = show({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SecretsPrefix}*"})
    want = {
        "MasterRole": (
            {("ssm:PutParameter", key), ("ssm:GetParameter", key), ("ssm:DeleteParameter", key), ("ssm:GetParameter", secrets)},
            {("scheduler:DeleteSchedule", sched)},
        ),
        "LauncherRole": (
            {("ssm:DeleteParameter", key)},
            {("scheduler:CreateSchedule", sched), ("scheduler:GetSchedule", sched), ("scheduler:DeleteSchedule", sched)},
        ),
    }
    for role, (ssm, scheduler) in want.items():
        if allowed(t, role, "ssm:") != ssm:
            errors.append(f"{role} ssm: {sorted(allowed(t, role, 'ssm:'))}, expected {sorted(ssm)}")
        if allowed(t, role, "scheduler:") != scheduler:
            errors.append(f"{role} scheduler: {sorted(allowed(t, role, 'scheduler:'))}, expected {sorted(scheduler)}")
    for name in t.get("Resources", {}):
        for action, res in allowed(t, name, "ssm:") | allowed(t, name, "scheduler:"):
            if res == show("*"):
                errors.append(f"{name} grants {action} on *")
    res = t.get("Resources", {})
    role = res.get("SchedulerRole", {}).get("Properties", {})
    trust = role.get("AssumeRolePolicyDocument", {}).get("Statement", [])
    principals = [st.get("Principal", {}).get("Service") for st in trust]
    if principals != ["scheduler.amazonaws.com"]:
        errors.append(f"SchedulerRole is assumed by {show(principals)}, not scheduler.amazonaws.com only")
    if not all(st.get("Condition", {}).get("StringEquals", {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"} for st in trust):
        errors.append("SchedulerRole's trust is not limited to this account (aws:SourceAccount)")
    function = {"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-launcher"}
    actions = {(a, show(r)) for _, st in role_statements(t, "SchedulerRole") for a in as_list(st.get("Action")) for r in as_list(st.get("Resource"))}
    if actions != {("lambda:InvokeFunction", show(function))}:
        errors.append(f"SchedulerRole may {sorted(actions)}, not only invoke the launcher")
    passes = [
        st
        for _, st in role_statements(t, "LauncherRole")
        if "iam:PassRole" in as_list(st.get("Action")) and st.get("Resource") == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    ]
    if len(passes) != 1 or passes[0].get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") != "scheduler.amazonaws.com":
        errors.append(f"the launcher does not pass SchedulerRole to the scheduler only: {show(passes)}")
    env = res.get("LauncherFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    if env.get("SQUALL_WATCH_TARGET") != function:
        errors.append(f"SQUALL_WATCH_TARGET is {show(env.get('SQUALL_WATCH_TARGET'))}, not the launcher's ARN")
    if env.get("SQUALL_WATCH_ROLE") != {"Fn::GetAtt": ["SchedulerRole", "Arn"]}:
        errors.append(f"SQUALL_WATCH_ROLE is {show(env.get('SQUALL_WATCH_ROLE'))}, not SchedulerRole")
    if res.get("LauncherFunction", {}).get("Properties", {}).get("FunctionName") != {"Fn::Sub": "${AWS::StackName}-launcher"}:
        errors.append("the function's name is not the one its watchdog ARN spells")
    return errors


def check_stack_scope(t):
    errors = []
    stack = {"Ref": "AWS::StackName"}
    for role in ("MasterRole", "LauncherRole"):
        for _, st in role_statements(t, role):
            actions = as_list(st.get("Action"))
            resources = [show(r) for r in as_list(st.get("Resource"))]
            cond = st.get("Condition", {}).get("StringEquals", {})
            if "ec2:RunInstances" in actions and any("instance/*" in r or "volume/*" in r for r in resources):
                if cond.get("aws:RequestTag/squall:stack") != stack:
                    errors.append(f"{role} {st.get('Sid')}: RunInstances without the stack tag: {show(st)}")
            if "ec2:TerminateInstances" in actions and cond.get("ec2:ResourceTag/squall:stack") != stack:
                errors.append(f"{role} {st.get('Sid')}: TerminateInstances of other stacks' instances: {show(st)}")
    env = t.get("Resources", {}).get("LauncherFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    if env.get("SQUALL_STACK") != stack:
        errors.append(f"SQUALL_STACK is {show(env.get('SQUALL_STACK'))}, not the stack's name")
    return errors


def check_secrets_scope(t):
    import re

    errors = []
    secrets = show({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SecretsPrefix}*"})
    for name in t.get("Resources", {}):
        readers = {a for a, r in allowed(t, name, "ssm:") if r == secrets}
        want = {"ssm:GetParameter"} if name == "MasterRole" else set()
        if readers != want:
            errors.append(f"{name} may {sorted(readers)} on the secrets prefix, expected {sorted(want)}")
    env = t.get("Resources", {}).get("LauncherFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    if env.get("SQUALL_SECRETS_PREFIX") != {"Ref": "SecretsPrefix"}:
        errors.append(f"SQUALL_SECRETS_PREFIX is {show(env.get('SQUALL_SECRETS_PREFIX'))}, not the SecretsPrefix parameter")
    pattern = t.get("Parameters", {}).get("SecretsPrefix", {}).get("AllowedPattern")
    if not pattern:
        return errors + ["SecretsPrefix has no AllowedPattern"]
    for v in ["/", "/squall/", "*", "/*/", "/squall/runs/", "/squall/runs/x/", "squall/secrets/", "/squall/secrets", "/a*/"]:
        if re.fullmatch(pattern, v):
            errors.append(f"SecretsPrefix accepts {v!r}")
    for v in ["/squall/secrets/", "/team-a/prod/"]:
        if not re.fullmatch(pattern, v):
            errors.append(f"SecretsPrefix refuses {v!r}")
    default = t.get("Parameters", {}).get("SecretsPrefix", {}).get("Default")
    if default != "/squall/secrets/":
        errors.append(f"SecretsPrefix defaults to {default!r}")
    return errors


def check_prefix_patterns(t):
    import re

    errors = []
    params = t.get("Parameters", {})
    bad = ["runs/", "bin/", "playbooks/", "cache/", "b*/", "*/", "in*box/", "inbox"]
    good = ["inbox/", "data/in/", "models/"]
    for name, extra_good in (("UploadPrefix", []), ("WorkerDataPrefix", [""])):
        pattern = params.get(name, {}).get("AllowedPattern")
        if not pattern:
            errors.append(f"{name} has no AllowedPattern")
            continue
        for v in bad:
            if re.fullmatch(pattern, v):
                errors.append(f"{name} accepts {v!r}")
        for v in good + extra_good:
            if not re.fullmatch(pattern, v):
                errors.append(f"{name} refuses {v!r}")
    return errors


def seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)


def check_dead_letters(t):
    errors = []
    res = t.get("Resources", {})
    fn = res.get("LauncherFunction", {}).get("Properties", {})
    target = fn.get("DeadLetterConfig", {}).get("TargetArn")
    queues = resources(t, "AWS::SQS::Queue")
    arns = [{"Fn::GetAtt": [q, "Arn"]} for q in queues]
    if show(target) not in [show(a) for a in arns]:
        errors.append(f"LauncherFunction's DeadLetterConfig is {show(target)}, not a queue of the stack")
    elif allowed(t, "LauncherRole", "sqs:") != {("sqs:SendMessage", show(target))}:
        errors.append(f"LauncherRole sqs: {sorted(allowed(t, 'LauncherRole', 'sqs:'))}, expected SendMessage on the queue only")
    retries = [
        r.get("Properties", {})
        for r in resources(t, "AWS::Lambda::EventInvokeConfig").values()
        if r.get("Properties", {}).get("FunctionName") == {"Ref": "LauncherFunction"}
    ]
    if [r.get("MaximumRetryAttempts") for r in retries] != [2]:
        errors.append(f"the launcher's event retries are {retries}, expected MaximumRetryAttempts 2")
    env = fn.get("Environment", {}).get("Variables", {})
    stale = env.get("SQUALL_STALE_CLAIM")
    timeout = int(fn.get("Timeout", 3))
    if not isinstance(stale, str) or not timeout < seconds(stale) < timeout + 60:
        errors.append(f"SQUALL_STALE_CLAIM {stale!r} is not between the launcher's Timeout {timeout} and a minute more (Lambda's first retry)")
    budget = env.get("SQUALL_LAUNCH_BUDGET")
    if not isinstance(budget, str) or seconds(budget) + 50 > int(fn.get("Timeout", 3)):
        errors.append(f"SQUALL_LAUNCH_BUDGET {budget!r} leaves less than 50 s of the launcher's Timeout {fn.get('Timeout')} (note, lookup, record)")
    return errors


CHECKS = [
    ("notification", check_notification),
    ("upload-read", check_upload_read),
    ("cache-lifecycle", check_cache_lifecycle),
    ("worker-role", check_worker_role),
    ("succession", check_succession),
    ("stack-scope", check_stack_scope),
    ("secrets-scope", check_secrets_scope),
    ("prefix-patterns", check_prefix_patterns),
    ("dead-letters", check_dead_letters),
]

if __name__ == "__main__":
    sys.exit(main(sys.argv))
