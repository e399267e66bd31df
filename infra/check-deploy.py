#!/usr/bin/env python3
"""Deploys infra/template.yaml to moto's CloudFormation and checks the result through
the service APIs (S3, Lambda, IAM, EventBridge, EC2, CloudWatch Logs, SSM).

    /var/tmp/squall-moto-venv/bin/python infra/check-deploy.py http://127.0.0.1:PORT infra/template.yaml

It creates the prerequisites (a VPC 127.200.0.0/16 with a subnet 127.200.1.0/24 -
loopback ranges on purpose, nothing is ever sent there - and a code bucket holding a
small dummy zip), then two stacks: one with every parameter given a non-default value
(the bucket name derived from the stack name), one with only the required parameters and
an explicit BucketName (so both branches of the bucket-name condition and every default
are exercised). Each stack must reach CREATE_COMPLETE within 60 s. Every mismatch is
reported; the exit status is 1 if there was any, 2 on a usage error. It prints the
replayed and failed checks and a count per stack; SQUALL_CHECK_VERBOSE=1 prints every
check.

moto 5.2.5 limitations met, and what this script does about them:

- AWS::S3::BucketPolicy is not supported by moto's CloudFormation: moto logs "No Moto
  CloudFormation support" and skips the resource (the stack still completes; its summary
  shows an empty entry).
- Of AWS::S3::Bucket's properties moto applies only BucketName, BucketEncryption and
  Tags. VersioningConfiguration, PublicAccessBlockConfiguration, OwnershipControls,
  NotificationConfiguration and LifecycleConfiguration are accepted and ignored.

  For the policy, versioning, public access block, ownership controls and notification,
  the script first asks S3. If S3 has the setting (a moto that implements it), it is
  checked as is. If not, and only for these known gaps, the script resolves that part
  of the template itself (Ref, Fn::Sub, Fn::GetAtt, Fn::If... against the deployed
  stack's parameters and resources), applies it through the S3 API (PutBucketPolicy,
  PutBucketVersioning, ...), reads it back and checks it; the summary says "replayed".
  This proves the template declares it and that its resolved value is valid for S3 and
  means what it should, but not that CloudFormation applies it. LifecycleConfiguration
  is not checked here (cfn-lint checks its shape).
- AWS::Lambda::Function's Architectures is ignored (moto reports x86_64): the check of
  the architecture is only meaningful for the default, x86_64, which both stacks use.
- AWS::EC2::SecurityGroup's SecurityGroupEgress is ignored; moto gives every new group
  the default allow-all egress, which is also what the template declares, so the
  egress check cannot tell the two apart.
- AWS::IAM::Role's inline Policies come back from GetRolePolicy as the Python repr of
  the document (single quotes), not JSON; policies of AWS::IAM::Policy resources come
  back as JSON. The script reads both (ast.literal_eval for the former).
- Fn::GetAtt of an AWS::Logs::LogGroup's Arn gives the ARN without the trailing ":*"
  that CloudFormation documents; the template spells that ARN out with Fn::Sub instead.
- moto does not evaluate IAM policies, so the IAM checks read the policy documents and
  check their statements (resources, conditions, no '*' action on '*').
"""

import ast
import io
import json
import os
import secrets
import sys
import time
import zipfile

# Dummy credentials, set before boto3 is imported: nothing here may reach AWS.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ["AWS_SECURITY_TOKEN"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import boto3  # noqa: E402
import botocore.exceptions  # noqa: E402
import yaml  # noqa: E402

REGION = "us-east-1"
CREATE_TIMEOUT_S = 60
# SQUALL_CHECK_VERBOSE=1 prints every check, not only the replayed and failed ones.
VERBOSE = os.environ.get("SQUALL_CHECK_VERBOSE", "") not in ("", "0")

# What the template must set, independent of the template's text.
LAMBDA_RUNTIME = "provided.al2023"
LAMBDA_HANDLER = "bootstrap"
LAMBDA_MEMORY = 256
LAMBDA_TIMEOUT = 120
LOG_RETENTION_DAYS = 30
DEFAULTS = {
    "ImageId": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    "MasterInstanceType": "t3.small",
    "Schedule": "cron(0 2 * * ? *)",
    "NightlyPlaybook": "playbooks/nightly.yml",
    "UploadPrefix": "inbox/",
    "UploadPlaybook": "playbooks/upload.yml",
    "CacheDays": "30",
    "WorkerDataPrefix": "",
    "SecretsPrefix": "/squall/secrets/",
}
ENV_KEYS = {
    "SQUALL_BUCKET", "SQUALL_SUBNET", "SQUALL_SECURITY_GROUPS",
    "SQUALL_WORKER_SECURITY_GROUPS", "SQUALL_MASTER_PROFILE", "SQUALL_IMAGE",
    "SQUALL_MASTER_TYPE", "SQUALL_UPLOADS", "SQUALL_SCHEDULES", "SQUALL_BINARY_KEY",
    "SQUALL_AGENT_KEY", "SQUALL_WATCH_TARGET", "SQUALL_WATCH_ROLE", "SQUALL_STALE_AFTER",
    "SQUALL_STACK", "SQUALL_SECRETS_PREFIX", "SQUALL_STALE_CLAIM",
    "SQUALL_LAUNCH_BUDGET",
}
# The only actions allowed on Resource "*".
ACTIONS_ON_ANY_RESOURCE = {"ec2:DescribeInstances", "ec2:DescribeImages"}


class Checks:
    """Collects results: every mismatch is reported, not only the first."""

    def __init__(self):
        self.failures = []
        self.lines = []
        self.stack = ""  # named in the failures' summary

    def ok(self, what):
        self.lines.append(f"  ok       {what}")

    def replayed(self, what):
        self.lines.append(f"  replayed {what}")

    def fail(self, what):
        self.failures.append(f"[{self.stack}] {what.strip()}" if self.stack else what)
        self.lines.append(f"  FAILED   {what}")

    def expect(self, cond, what, detail=""):
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + detail if detail else ''}")
        return cond

    def equal(self, actual, expected, what):
        return self.expect(actual == expected, what, f"expected {expected!r}, found {actual!r}")


# --------------------------------------------------------------------------------------
# The template, with CloudFormation's short-form tags, and a small intrinsic resolver for
# the parts moto does not apply.
# --------------------------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    pass


def _cfn_tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)  # noqa: S506 (SafeLoader subclass)


class Resolver:
    """Resolves intrinsic functions against a deployed stack."""

    def __init__(self, template, params, pseudo, physical, getatt):
        self.template = template
        self.values = {**params, **pseudo}
        self.physical = physical
        self.getatt = getatt

    def condition(self, name):
        return bool(self.resolve(self.template["Conditions"][name]))

    def ref(self, name):
        if name in self.values:
            return self.values[name]
        if name in self.physical:
            return self.physical[name]
        raise KeyError(f"cannot resolve Ref {name}")

    def sub(self, text, extra):
        out, i = [], 0
        while i < len(text):
            if text.startswith("${!", i):
                out.append("${")
                i += 3
            elif text.startswith("${", i):
                j = text.index("}", i)
                name = text[i + 2:j]
                if name in extra:
                    out.append(str(extra[name]))
                elif "." in name and not name.startswith("AWS::"):
                    res, att = name.split(".", 1)
                    out.append(str(self.getatt(res, att)))
                else:
                    out.append(str(self.ref(name)))
                i = j + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def resolve(self, node):
        if isinstance(node, list):
            return [self.resolve(n) for n in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
            if key == "Fn::GetAtt":
                return self.getatt(arg[0], arg[1])
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = self.resolve(arg)
                return a == b
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key.startswith("Fn::"):
                raise KeyError(f"resolver does not know {key}")
        return {k: self.resolve(v) for k, v in node.items()}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def error_code(e):
    return e.response.get("Error", {}).get("Code", "") if hasattr(e, "response") else ""


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def policy_doc(doc):
    if not isinstance(doc, str):
        return doc
    try:
        return json.loads(doc)
    except json.JSONDecodeError:
        # moto stores an AWS::IAM::Role's inline Policies as the Python repr of the
        # document (see the module docstring): read that, literals only.
        return ast.literal_eval(doc)


def statements(doc):
    return as_list(policy_doc(doc).get("Statement"))


def ci_get(d, key):
    """Case-insensitive lookup (moto writes AWS:SourceArn, AWS writes aws:SourceArn)."""
    for k, v in (d or {}).items():
        if k.lower() == key.lower():
            return v
    return None


def zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\necho 'dummy launcher for the deploy check'\n")
    return buf.getvalue()


class Env:
    def __init__(self, endpoint):
        def client(name):
            return boto3.client(name, endpoint_url=endpoint, region_name=REGION)

        self.cf = client("cloudformation")
        self.s3 = client("s3")
        self.ec2 = client("ec2")
        self.lam = client("lambda")
        self.sqs = client("sqs")
        self.iam = client("iam")
        self.events = client("events")
        self.logs = client("logs")
        self.ssm = client("ssm")
        self.sts = client("sts")


def wait_created(env, stack, checks):
    deadline = time.monotonic() + CREATE_TIMEOUT_S
    status = "?"
    while time.monotonic() < deadline:
        status = env.cf.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        time.sleep(0.5)
    if status != "CREATE_COMPLETE":
        reasons = [
            f"{e['LogicalResourceId']}: {e['ResourceStatus']} {e.get('ResourceStatusReason') or ''}"
            for e in env.cf.describe_stack_events(StackName=stack)["StackEvents"]
            if "FAILED" in e["ResourceStatus"]
        ]
        checks.fail(f"stack {stack} is {status} (wanted CREATE_COMPLETE within {CREATE_TIMEOUT_S} s)"
                    + ("; " + "; ".join(reasons) if reasons else ""))
        return False
    checks.ok(f"stack {stack}: CREATE_COMPLETE")
    return True


# --------------------------------------------------------------------------------------
# The checks of one deployed stack
# --------------------------------------------------------------------------------------
def check_stack(env, template, stack, given, vpc, subnet, code_size, checks):
    account = env.sts.get_caller_identity()["Account"]
    p = {**DEFAULTS, **given}
    stack_desc = env.cf.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack_desc.get("Outputs", [])}
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in env.cf.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        if r.get("LogicalResourceId")
    }

    def phys(logical):
        if logical not in physical:
            checks.fail(f"stack has no resource {logical}")
            return None
        return physical[logical]

    # Expected values, computed from the inputs, not from the template.
    bucket = p.get("BucketName") or f"{stack}-{account}-{REGION}"
    bucket_arn = f"arn:aws:s3:::{bucket}"
    function_name = f"{stack}-launcher"
    rule_name = f"{stack}-nightly"
    image = env.ssm.get_parameter(Name=p["ImageId"])["Parameter"]["Value"]
    checks.expect(image.startswith("ami-"), f"ImageId {p['ImageId']} resolves to an AMI", image)

    # ---- security groups
    master_sg, worker_sg = phys("MasterSecurityGroup"), phys("WorkerSecurityGroup")
    if master_sg and worker_sg:
        groups = {g["GroupId"]: g for g in env.ec2.describe_security_groups(
            GroupIds=[master_sg, worker_sg])["SecurityGroups"]}
        m, w = groups.get(master_sg), groups.get(worker_sg)
        if checks.expect(m is not None and w is not None, "both security groups exist"):
            checks.equal(m["VpcId"], vpc, "master SG is in the VPC")
            checks.equal(w["VpcId"], vpc, "worker SG is in the VPC")
            checks.equal(m["IpPermissions"], [], "master SG has no inbound rule")
            perms = w["IpPermissions"]
            only = perms[0] if len(perms) == 1 else {}
            checks.expect(
                len(perms) == 1 and only.get("IpProtocol") == "tcp"
                and only.get("FromPort") == 22 and only.get("ToPort") == 22
                and [g["GroupId"] for g in only.get("UserIdGroupPairs", [])] == [master_sg]
                and not only.get("IpRanges") and not only.get("Ipv6Ranges")
                and not only.get("PrefixListIds"),
                "worker SG: inbound is TCP 22 from the master SG only", json.dumps(perms, default=str))
            for name, g in (("master", m), ("worker", w)):
                checks.expect(
                    any(e.get("IpProtocol") == "-1" and {"CidrIp": "0.0.0.0/0"} in
                        [{"CidrIp": r["CidrIp"]} for r in e.get("IpRanges", [])]
                        for e in g["IpPermissionsEgress"]),
                    f"{name} SG allows all outbound")

    # ---- IAM: roles, instance profile, policies
    master_role_name, launcher_role_name = phys("MasterRole"), phys("LauncherRole")
    profile_name = phys("MasterInstanceProfile")
    master_role = env.iam.get_role(RoleName=master_role_name)["Role"] if master_role_name else {}
    launcher_role = env.iam.get_role(RoleName=launcher_role_name)["Role"] if launcher_role_name else {}
    profile = env.iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"] if profile_name else {}
    master_role_arn, launcher_role_arn = master_role.get("Arn"), launcher_role.get("Arn")
    checks.equal([r["RoleName"] for r in profile.get("Roles", [])], [master_role_name],
                 "master instance profile holds the master role (only)")

    def trusted(role):
        return sorted(
            s
            for st in statements(role.get("AssumeRolePolicyDocument", {}))
            if st.get("Effect") == "Allow" and "sts:AssumeRole" in as_list(st.get("Action"))
            for s in as_list(ci_get(st.get("Principal"), "Service"))
        )

    checks.equal(trusted(master_role), ["ec2.amazonaws.com"], "master role is assumed by EC2 only")
    checks.equal(trusted(launcher_role), ["lambda.amazonaws.com"], "launcher role is assumed by Lambda only")
    scheduler_role_name = phys("SchedulerRole")
    scheduler_role = env.iam.get_role(RoleName=scheduler_role_name)["Role"] if scheduler_role_name else {}
    checks.equal(trusted(scheduler_role), ["scheduler.amazonaws.com"],
                 "scheduler role is assumed by EventBridge Scheduler only")

    def role_statements(role_name):
        out = []
        for name in env.iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
            doc = env.iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
            out.extend(statements(doc))
        attached = env.iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
        checks.equal(attached, [], f"{role_name} has no managed policies")
        return out

    def allowed(stmts, prefix):
        """{(action, resource): condition} of the Allow statements for actions with prefix."""
        out = {}
        for st in stmts:
            if st.get("Effect") != "Allow":
                continue
            for a in as_list(st.get("Action")):
                if a.startswith(prefix) or a == "*":
                    for r in as_list(st.get("Resource")):
                        out[(a, r)] = st.get("Condition") or {}
        return out

    ec2_arn = f"arn:aws:ec2:{REGION}:{account}"
    instance_arns = [f"{ec2_arn}:instance/*", f"{ec2_arn}:volume/*"]
    subnet_arn = f"{ec2_arn}:subnet/{subnet}"

    def check_role(label, role_name, s3_expected, run_with_expected):
        stmts = role_statements(role_name)
        for st in stmts:
            actions, resources = as_list(st.get("Action")), as_list(st.get("Resource"))
            if st.get("Effect") == "Allow" and "*" in resources:
                checks.expect(set(actions) <= ACTIONS_ON_ANY_RESOURCE,
                              f"{label}: only Describe calls on Resource '*'", json.dumps(st))
            if "*" in actions or st.get("NotAction") or st.get("NotResource"):
                checks.fail(f"{label}: wildcard action or Not* element: {json.dumps(st)}")
        s3 = {k for k in allowed(stmts, "s3:")}
        checks.equal(sorted(s3), sorted(s3_expected), f"{label}: S3 access is exactly as designed")
        ec2 = allowed(stmts, "ec2:")
        for r in instance_arns:
            cond = ec2.get(("ec2:RunInstances", r))
            checks.expect(cond is not None and ci_get(ci_get(cond, "Null"), "aws:RequestTag/squall:run") == "false",
                          f"{label}: RunInstances on {r.rsplit(':', 1)[1]} requires the squall:run request tag",
                          json.dumps(cond))
            cond = ec2.get(("ec2:CreateTags", r))
            checks.expect(cond is not None and ci_get(ci_get(cond, "StringEquals"), "ec2:CreateAction") == "RunInstances",
                          f"{label}: CreateTags on {r.rsplit(':', 1)[1]} only while launching", json.dumps(cond))
        cond = ec2.get(("ec2:TerminateInstances", f"{ec2_arn}:instance/*"))
        checks.expect(cond is not None and ci_get(ci_get(cond, "Null"), "ec2:ResourceTag/squall:run") == "false",
                      f"{label}: TerminateInstances only on squall:run-tagged instances", json.dumps(cond))
        run_with = {r for (a, r), c in ec2.items() if a == "ec2:RunInstances" and r not in instance_arns}
        checks.equal(sorted(run_with), sorted(run_with_expected),
                     f"{label}: RunInstances resources (image, subnet, SGs, ENIs) are exactly as designed")
        eni = ec2.get(("ec2:RunInstances", f"{ec2_arn}:network-interface/*"))
        checks.expect(eni is not None and ci_get(ci_get(eni, "StringEquals"), "ec2:Subnet") == subnet_arn,
                      f"{label}: network interfaces only in the subnet", json.dumps(eni))
        for st in stmts:
            for a in as_list(st.get("Action")):
                if a.startswith("ec2:") and a not in {"ec2:RunInstances", "ec2:CreateTags",
                                                      "ec2:TerminateInstances", *ACTIONS_ON_ANY_RESOURCE}:
                    checks.fail(f"{label}: unexpected EC2 action {a}")
        return stmts

    image_arn = f"arn:aws:ec2:{REGION}::image/*"
    eni_arn = f"{ec2_arn}:network-interface/*"
    if master_role_name:
        stmts = check_role(
            "master role", master_role_name,
            {("s3:GetObject", f"{bucket_arn}/bin/*"), ("s3:GetObject", f"{bucket_arn}/playbooks/*"),
             ("s3:GetObject", f"{bucket_arn}/runs/*"), ("s3:PutObject", f"{bucket_arn}/runs/*"),
             ("s3:AbortMultipartUpload", f"{bucket_arn}/runs/*"), ("s3:ListBucket", bucket_arn),
             ("s3:GetObject", f"{bucket_arn}/cache/*"), ("s3:PutObject", f"{bucket_arn}/cache/*"),
             ("s3:AbortMultipartUpload", f"{bucket_arn}/cache/*"),
             # The live-run marker, removed once the run is recorded.
             ("s3:DeleteObject", f"{bucket_arn}/live/*"),
             # The upload that started the run, and only the upload prefix.
             ("s3:GetObject", f"{bucket_arn}/{p['UploadPrefix']}*")},
            {image_arn, subnet_arn, eni_arn, f"{ec2_arn}:security-group/{master_sg}",
             f"{ec2_arn}:security-group/{worker_sg}", f"{ec2_arn}:spot-instances-request/*"})
        passes = [st for st in stmts if any(a.startswith("iam:") for a in as_list(st.get("Action")))]
        if p["WorkerDataPrefix"]:
            worker_role_arn = None
            worker_role_name = phys("WorkerRole")
            if worker_role_name:
                worker_role_arn = env.iam.get_role(RoleName=worker_role_name)["Role"]["Arn"]
            checks.expect(
                len(passes) == 1 and as_list(passes[0].get("Action")) == ["iam:PassRole"]
                and as_list(passes[0].get("Resource")) == [worker_role_arn]
                and ci_get(ci_get(passes[0].get("Condition"), "StringEquals"), "iam:PassedToService") == "ec2.amazonaws.com",
                "master role: iam:PassRole of the worker role to EC2 only", json.dumps(passes))
        else:
            checks.equal(passes, [], "master role has no IAM action (no PassRole: workers get no profile)")

    # ---- the workers' optional role (WorkerDataPrefix)
    if p["WorkerDataPrefix"]:
        worker_role_name, worker_profile_name = phys("WorkerRole"), phys("WorkerInstanceProfile")
        if worker_role_name and worker_profile_name:
            worker_role = env.iam.get_role(RoleName=worker_role_name)["Role"]
            checks.equal(trusted(worker_role), ["ec2.amazonaws.com"], "worker role is assumed by EC2 only")
            wprofile = env.iam.get_instance_profile(InstanceProfileName=worker_profile_name)["InstanceProfile"]
            checks.equal([r["RoleName"] for r in wprofile.get("Roles", [])], [worker_role_name],
                         "worker instance profile holds the worker role (only)")
            wstmts = role_statements(worker_role_name)
            prefix = p["WorkerDataPrefix"]
            checks.equal(
                sorted(allowed(wstmts, "s3:")),
                sorted({("s3:GetObject", f"{bucket_arn}/{prefix}*"), ("s3:PutObject", f"{bucket_arn}/{prefix}*"),
                        ("s3:AbortMultipartUpload", f"{bucket_arn}/{prefix}*"), ("s3:ListBucket", bucket_arn)}),
                "worker role: S3 on WorkerDataPrefix only")
            listing = allowed(wstmts, "s3:").get(("s3:ListBucket", bucket_arn), {})
            checks.equal(ci_get(ci_get(listing, "StringLike"), "s3:prefix"), f"{prefix}*",
                         "worker role: listing limited to WorkerDataPrefix")
            others = [a for st in wstmts for a in as_list(st.get("Action")) if not a.startswith("s3:")]
            checks.equal(others, [], "worker role: nothing but S3")
    else:
        checks.expect("WorkerRole" not in physical and "WorkerInstanceProfile" not in physical,
                      "no worker role or profile without WorkerDataPrefix", json.dumps(sorted(physical)))
    if launcher_role_name:
        stmts = check_role(
            "launcher role", launcher_role_name,
            {("s3:GetObject", f"{bucket_arn}/playbooks/*"), ("s3:GetObject", f"{bucket_arn}/runs/*"),
             ("s3:PutObject", f"{bucket_arn}/runs/*"), ("s3:ListBucket", bucket_arn),
             ("s3:GetObject", f"{bucket_arn}/{p['UploadPrefix']}*"),
             # The live-run markers of its runs' watchdogs.
             ("s3:GetObject", f"{bucket_arn}/live/*"), ("s3:PutObject", f"{bucket_arn}/live/*"),
             ("s3:DeleteObject", f"{bucket_arn}/live/*")},
            {image_arn, subnet_arn, eni_arn, f"{ec2_arn}:security-group/{master_sg}"})
        passes = [st for st in stmts if any(a.startswith("iam:") for a in as_list(st.get("Action")))]
        passed = sorted(
            (as_list(st.get("Resource"))[0], ci_get(ci_get(st.get("Condition"), "StringEquals"), "iam:PassedToService"))
            for st in passes
            if as_list(st.get("Action")) == ["iam:PassRole"] and len(as_list(st.get("Resource"))) == 1
        )
        scheduler_role_arn = scheduler_role.get("Arn")
        checks.equal(
            passed,
            sorted([(master_role_arn, "ec2.amazonaws.com"), (scheduler_role_arn, "scheduler.amazonaws.com")]),
            "launcher role: iam:PassRole of the master role to EC2 and the scheduler role to the scheduler only")
        checks.equal(len(passes), 2, "launcher role: no other iam: statement")
        # A run that outlives its master: the launcher makes and ends watchdog schedules
        # and ends login keys; only the master reads them.
        params = f"arn:aws:ssm:{REGION}:{account}:parameter/squall/runs/*"
        schedules = f"arn:aws:scheduler:{REGION}:{account}:schedule/default/squall-*"
        checks.equal(sorted(allowed(stmts, "ssm:")), [("ssm:DeleteParameter", params)],
                     "launcher role: deletes run login keys, never reads them")
        checks.equal(sorted(allowed(stmts, "scheduler:")),
                     sorted((a, schedules) for a in ("scheduler:CreateSchedule", "scheduler:GetSchedule", "scheduler:DeleteSchedule")),
                     "launcher role: squall's watchdog schedules only")
        if master_role_name:
            mstmts = role_statements(master_role_name)
            secrets = f"arn:aws:ssm:{REGION}:{account}:parameter{p['SecretsPrefix']}*"
            checks.equal(sorted(allowed(mstmts, "ssm:")),
                         sorted([(a, params) for a in ("ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter")]
                                + [("ssm:GetParameter", secrets)]),
                         "master role: the runs' login keys, and reads the playbooks' secrets under SecretsPrefix only")
            checks.equal(sorted(allowed(mstmts, "scheduler:")), [("scheduler:DeleteSchedule", schedules)],
                         "master role: ends its run's watchdog only")
        if scheduler_role_name:
            sstmts = role_statements(scheduler_role_name)
            fn_arn = f"arn:aws:lambda:{REGION}:{account}:function:{function_name}"
            checks.equal(sorted((a, show) for st in sstmts for a in as_list(st.get("Action")) for show in as_list(st.get("Resource"))),
                         [("lambda:InvokeFunction", fn_arn)], "scheduler role: invokes the launcher only")
        log_arn = f"arn:aws:logs:{REGION}:{account}:log-group:/aws/lambda/{function_name}:*"
        logs = allowed(stmts, "logs:")
        checks.equal(sorted(logs), sorted({("logs:CreateLogStream", log_arn), ("logs:PutLogEvents", log_arn)}),
                     "launcher role: logs of its own log group only")

    # ---- log group
    groups = env.logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{function_name}")["logGroups"]
    checks.expect(len(groups) == 1 and groups[0].get("retentionInDays") == LOG_RETENTION_DAYS,
                  f"log group /aws/lambda/{function_name} with {LOG_RETENTION_DAYS}-day retention",
                  json.dumps(groups, default=str))

    # ---- the function
    function_arn = None
    try:
        fn = env.lam.get_function(FunctionName=function_name)
    except botocore.exceptions.ClientError as e:
        checks.fail(f"function {function_name}: {e}")
        fn = None
    if fn:
        conf = fn["Configuration"]
        function_arn = conf["FunctionArn"]
        checks.equal(phys("LauncherFunction"), function_name, "function has the fixed name")
        checks.equal(conf.get("Runtime"), LAMBDA_RUNTIME, "function runtime")
        checks.equal(conf.get("Handler"), LAMBDA_HANDLER, "function handler")
        checks.equal(conf.get("MemorySize"), LAMBDA_MEMORY, "function memory")
        checks.equal(conf.get("Timeout"), LAMBDA_TIMEOUT, "function timeout")
        checks.equal(conf.get("Architectures"), ["x86_64"], "function architecture (default)")
        checks.equal(conf.get("Role"), launcher_role_arn, "function runs as the launcher role")
        checks.equal(conf.get("CodeSize"), code_size, "function code is the uploaded zip")
        expected_env = {
            "SQUALL_BUCKET": bucket,
            "SQUALL_SUBNET": subnet,
            "SQUALL_SECURITY_GROUPS": master_sg,
            "SQUALL_WORKER_SECURITY_GROUPS": worker_sg,
            "SQUALL_MASTER_PROFILE": profile.get("Arn"),
            "SQUALL_IMAGE": image,
            "SQUALL_MASTER_TYPE": p["MasterInstanceType"],
            "SQUALL_UPLOADS": f"{p['UploadPrefix']}={p['UploadPlaybook']}",
            "SQUALL_SCHEDULES": f"{rule_name}={p['NightlyPlaybook']}",
            "SQUALL_BINARY_KEY": "bin/squall",
            "SQUALL_AGENT_KEY": "bin/squall-worker",
            "SQUALL_WATCH_TARGET": f"arn:aws:lambda:{REGION}:{account}:function:{function_name}",
            "SQUALL_WATCH_ROLE": scheduler_role.get("Arn"),
            "SQUALL_STALE_AFTER": "3m",
            "SQUALL_STALE_CLAIM": "150s",
            "SQUALL_LAUNCH_BUDGET": "60s",
            "SQUALL_STACK": stack,
            "SQUALL_SECRETS_PREFIX": p["SecretsPrefix"],
        }
        assert set(expected_env) == ENV_KEYS
        actual_env = conf.get("Environment", {}).get("Variables", {})
        checks.equal(set(actual_env), ENV_KEYS, "function environment has exactly the squall variables")
        for k in sorted(ENV_KEYS):
            checks.equal(actual_env.get(k), expected_env[k], f"  {k}")

        # The events it gives up on are kept in the stack's queue.
        try:
            url = env.sqs.get_queue_url(QueueName=f"{stack}-launcher-dead-letters")["QueueUrl"]
            queue_arn = env.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        except botocore.exceptions.ClientError as e:
            checks.fail(f"dead-letter queue {stack}-launcher-dead-letters: {e}")
            queue_arn = None
        checks.equal(queue_arn is not None, True, "the stack has the launcher's dead-letter queue")
        # moto's CloudFormation drops the function's DeadLetterConfig (5.2): when it is
        # reported, it must be the queue; the template check (dead-letters) covers it.
        target = (conf.get("DeadLetterConfig") or {}).get("TargetArn")
        if target is not None:
            checks.equal(target, queue_arn, "function's dead-letter queue is the stack's queue")

        # Who may invoke it.
        try:
            policy = json.loads(env.lam.get_policy(FunctionName=function_name)["Policy"])
        except botocore.exceptions.ClientError as e:
            policy = {}
            checks.fail(f"function has no resource policy: {e}")
        invokers = {}
        for st in as_list(policy.get("Statement")):
            service = ci_get(st.get("Principal"), "Service") if isinstance(st.get("Principal"), dict) else st.get("Principal")
            cond = st.get("Condition") or {}
            invokers[service] = (st.get("Action"), ci_get(ci_get(cond, "ArnLike"), "aws:SourceArn"),
                                 ci_get(ci_get(cond, "StringEquals"), "aws:SourceAccount"))
        rule_arn = f"arn:aws:events:{REGION}:{account}:rule/{rule_name}"
        checks.equal(sorted(invokers), ["events.amazonaws.com", "s3.amazonaws.com"],
                     "function may be invoked by S3 and EventBridge only")
        checks.equal(invokers.get("s3.amazonaws.com"), ("lambda:InvokeFunction", bucket_arn, account),
                     "S3 may invoke it for this bucket and account")
        checks.equal(invokers.get("events.amazonaws.com"), ("lambda:InvokeFunction", rule_arn, None),
                     "EventBridge may invoke it for the nightly rule")

    # ---- the rule
    try:
        rule = env.events.describe_rule(Name=rule_name)
        checks.equal(phys("NightlyRule"), rule_name, "rule has the fixed name")
        checks.equal(rule.get("ScheduleExpression"), p["Schedule"], "rule schedule")
        checks.equal(rule.get("State"), "ENABLED", "rule is enabled")
        targets = env.events.list_targets_by_rule(Rule=rule_name)["Targets"]
        checks.equal([t["Arn"] for t in targets], [function_arn], "rule targets the function (only)")
    except botocore.exceptions.ClientError as e:
        checks.fail(f"rule {rule_name}: {e}")

    # ---- the bucket
    try:
        env.s3.head_bucket(Bucket=bucket)
        checks.ok(f"bucket {bucket} exists")
    except botocore.exceptions.ClientError as e:
        checks.fail(f"bucket {bucket}: {e}")
        return
    checks.equal(phys("DataBucket"), bucket, "bucket has the expected name")
    try:
        rules = env.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        checks.equal([r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules], ["AES256"],
                     "bucket default encryption is SSE-S3 (AES256)")
    except botocore.exceptions.ClientError as e:
        checks.fail(f"bucket encryption: {e}")

    # The settings moto's CloudFormation does not apply: see the module docstring.
    resources = template["Resources"]

    def getatt(logical, att):
        kind = resources[logical]["Type"]
        if kind == "AWS::S3::Bucket" and att == "Arn":
            return f"arn:aws:s3:::{physical[logical]}"
        if kind == "AWS::Lambda::Function" and att == "Arn":
            return env.lam.get_function(FunctionName=physical[logical])["Configuration"]["FunctionArn"]
        raise KeyError(f"resolver does not know GetAtt {logical}.{att}")

    params = {x["ParameterKey"]: x["ParameterValue"] for x in stack_desc["Parameters"]}
    resolver = Resolver(template, params,
                        {"AWS::Region": REGION, "AWS::AccountId": account, "AWS::Partition": "aws",
                         "AWS::StackName": stack, "AWS::URLSuffix": "amazonaws.com",
                         "AWS::StackId": stack_desc["StackId"]},
                        physical, getatt)
    bucket_props = resources["DataBucket"]["Properties"]

    def present_or_replay(what, read, replay, verify):
        """Checks a bucket setting as S3 has it; for a moto gap, replays the template's."""
        try:
            value = read()
        except botocore.exceptions.ClientError as e:
            if error_code(e) in {"NoSuchBucketPolicy", "NoSuchPublicAccessBlockConfiguration",
                                 "OwnershipControlsNotFoundError"}:
                value = None
            else:
                raise
        if value:
            verify(value, f"{what}")
            return
        try:
            replay()
            value = read()
        except (botocore.exceptions.ClientError, KeyError) as e:
            checks.fail(f"{what}: not set by moto, and the template's value could not be applied: {e}")
            return
        checks.replayed(f"{what}: not applied by moto's CloudFormation; the template's value, resolved, was put through S3")
        verify(value, f"  {what} (replayed)")

    # Versioning.
    def read_versioning():
        return env.s3.get_bucket_versioning(Bucket=bucket).get("Status")

    present_or_replay(
        "bucket versioning",
        read_versioning,
        lambda: env.s3.put_bucket_versioning(
            Bucket=bucket,
            VersioningConfiguration={"Status": resolver.resolve(bucket_props["VersioningConfiguration"])["Status"]}),
        lambda v, what: checks.equal(v, "Enabled", what))

    # Public access block.
    def read_pab():
        return env.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]

    all_blocked = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    present_or_replay(
        "bucket public access block",
        read_pab,
        lambda: env.s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration=resolver.resolve(bucket_props["PublicAccessBlockConfiguration"])),
        lambda v, what: checks.equal(v, all_blocked, what))

    # Ownership controls.
    def read_ownership():
        return env.s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]

    present_or_replay(
        "bucket ownership controls",
        read_ownership,
        lambda: env.s3.put_bucket_ownership_controls(
            Bucket=bucket, OwnershipControls=resolver.resolve(bucket_props["OwnershipControls"])),
        lambda v, what: checks.equal(v, [{"ObjectOwnership": "BucketOwnerEnforced"}], what))

    # Notification to the function.
    def read_notification():
        return env.s3.get_bucket_notification_configuration(Bucket=bucket).get("LambdaFunctionConfigurations")

    def replay_notification():
        cfn = resolver.resolve(bucket_props["NotificationConfiguration"])
        api = [{"LambdaFunctionArn": c["Function"],
                "Events": [c["Event"]],
                "Filter": {"Key": {"FilterRules": c["Filter"]["S3Key"]["Rules"]}}}
               for c in cfn.get("LambdaConfigurations", [])]
        env.s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": api})

    def verify_notification(v, what):
        simple = [(c.get("LambdaFunctionArn"), c.get("Events"),
                   [(r["Name"].lower(), r["Value"]) for r in c.get("Filter", {}).get("Key", {}).get("FilterRules", [])])
                  for c in v]
        checks.equal(simple, [(function_arn, ["s3:ObjectCreated:*"], [("prefix", p["UploadPrefix"])])],
                     f"{what}: s3:ObjectCreated:* under {p['UploadPrefix']} to the function")

    present_or_replay("bucket notification", read_notification, replay_notification, verify_notification)

    # The TLS-only policy (a resource of its own).
    def read_policy():
        return json.loads(env.s3.get_bucket_policy(Bucket=bucket)["Policy"])

    def replay_policy():
        props = resolver.resolve(resources["DataBucketPolicy"]["Properties"])
        if props["Bucket"] != bucket:
            raise KeyError(f"DataBucketPolicy is for {props['Bucket']}, not {bucket}")
        env.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(props["PolicyDocument"]))

    def verify_policy(v, what):
        denies = [st for st in as_list(v.get("Statement"))
                  if st.get("Effect") == "Deny" and st.get("Principal") in ("*", {"AWS": "*"})
                  and as_list(st.get("Action")) == ["s3:*"]
                  and sorted(as_list(st.get("Resource"))) == sorted([bucket_arn, f"{bucket_arn}/*"])
                  and str(ci_get(ci_get(st.get("Condition"), "Bool"), "aws:SecureTransport")).lower() == "false"]
        checks.expect(len(denies) == 1, f"{what}: denies every request without TLS", json.dumps(v))
        allows = [st for st in as_list(v.get("Statement")) if st.get("Effect") != "Deny"]
        checks.equal(allows, [], f"{what}: grants nothing")

    present_or_replay("bucket policy", read_policy, replay_policy, verify_policy)

    # ---- outputs agree with the services
    expected_outputs = {
        "BucketName": bucket,
        "LauncherFunctionName": function_name,
        "LauncherFunctionArn": function_arn,
        "LauncherRoleArn": launcher_role_arn,
        "MasterRoleArn": master_role_arn,
        "MasterInstanceProfileName": profile_name,
        "MasterInstanceProfileArn": profile.get("Arn"),
        "MasterSecurityGroupId": master_sg,
        "WorkerSecurityGroupId": worker_sg,
        "NightlyRuleName": rule_name,
    }
    if p["WorkerDataPrefix"]:
        expected_outputs["WorkerInstanceProfileName"] = physical.get("WorkerInstanceProfile")
    checks.equal(outputs, expected_outputs, "stack outputs match the deployed resources")


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} MOTO_ENDPOINT_URL TEMPLATE", file=sys.stderr)
        return 2
    endpoint, template_path = argv[1], argv[2]
    body = open(template_path, encoding="utf-8").read()
    template = load_template(template_path)
    env = Env(endpoint)
    checks = Checks()
    tag = secrets.token_hex(3)

    # Prerequisites.
    vpc = env.ec2.create_vpc(CidrBlock="127.200.0.0/16")["Vpc"]["VpcId"]
    subnet = env.ec2.create_subnet(VpcId=vpc, CidrBlock="127.200.1.0/24")["Subnet"]["SubnetId"]
    code_bucket = f"squall-check-code-{tag}"
    code = zip_bytes()
    env.s3.create_bucket(Bucket=code_bucket)
    env.s3.put_object(Bucket=code_bucket, Key="launcher/bootstrap.zip", Body=code)
    print(f"prerequisites: {vpc} 127.200.0.0/16, {subnet} 127.200.1.0/24, s3://{code_bucket}/launcher/bootstrap.zip")

    required = {"VpcId": vpc, "SubnetId": subnet,
                "LauncherCodeBucket": code_bucket, "LauncherCodeKey": "launcher/bootstrap.zip"}
    stacks = [
        # Every parameter set, none to its default; the bucket name derived.
        (f"squall-check-{tag}", {
            **required,
            "ImageId": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64",
            "MasterInstanceType": "m7i.large",
            "Schedule": "cron(30 3 * * ? *)",
            "NightlyPlaybook": "playbooks/night.yml",
            "UploadPrefix": "drop/",
            "UploadPlaybook": "playbooks/ingest.yml",
            "LauncherArchitecture": "x86_64",
            "CacheDays": "10",
            "WorkerDataPrefix": "models/",
        }),
        # The required parameters and an explicit bucket name; the rest defaults.
        (f"squall-named-{tag}", {**required, "BucketName": f"squall-named-bucket-{tag}"}),
    ]
    for stack, given in stacks:
        print(f"\nstack {stack}")
        checks.stack = stack
        before, failed_before = len(checks.lines), len(checks.failures)
        try:
            env.cf.create_stack(
                StackName=stack, TemplateBody=body,
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
                Capabilities=["CAPABILITY_NAMED_IAM"])
        except botocore.exceptions.ClientError as e:
            checks.fail(f"CreateStack {stack} refused: {e}")
        else:
            if wait_created(env, stack, checks):
                check_stack(env, template, stack, given, vpc, subnet, len(code), checks)
        lines = checks.lines[before:]
        shown = lines if VERBOSE else [line for line in lines if not line.startswith("  ok")]
        if shown:
            print("\n".join(shown))
        print(f"  {len(lines)} checks, {len(checks.failures) - failed_before} failed")

    total = len(checks.lines)
    if checks.failures:
        print(f"\ncheck-deploy: {len(checks.failures)} of {total} checks FAILED:", file=sys.stderr)
        for f in checks.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    replayed = sum(1 for line in checks.lines if line.lstrip().startswith("replayed"))
    print(f"\ncheck-deploy: all {total} checks passed ({replayed} bucket settings replayed for moto's gaps)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except botocore.exceptions.EndpointConnectionError as e:
        print(f"check-deploy: cannot reach moto: {e}", file=sys.stderr)
        sys.exit(1)
