"""deploy/stepfunctions.cfn.yaml: the scheduled drill deploys (moto CloudFormation) and grants no more than it needs.

moto's CloudFormation creates the queue, the roles and the state machine (it
does not read the definition from DefinitionS3Location, so the definition
itself is tested in test_stepfunctions.py); it has no AWS::Scheduler::Schedule, so the schedule
is checked in the template itself: it starts this state machine and nothing
else, with a role that can do only that.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from drills.asl import build_definition, role_policy
from drills.runbook import load_runbook

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "stepfunctions.cfn.yaml"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt) as plain {tag: value} maps."""


def _short_tag(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> dict[str, Any]:
    if isinstance(node, yaml.SequenceNode):
        return {tag: loader.construct_sequence(node, deep=True)}
    return {tag: loader.construct_scalar(node)}  # type: ignore[arg-type]


for tag in ("Ref", "Sub", "GetAtt", "Not", "Equals"):
    CfnLoader.add_constructor(f"!{tag}", lambda loader, node, tag=tag: _short_tag(loader, node, tag))  # type: ignore[misc]


def template() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    return doc


def test_the_schedule_starts_this_state_machine_only() -> None:
    res = template()["Resources"]
    target = res["DrillSchedule"]["Properties"]["Target"]
    assert target["Arn"] == {"Ref": "DrillStateMachine"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    (statement,) = res["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "states:StartExecution" and statement["Resource"] == {"Ref": "DrillStateMachine"}


def test_the_state_machine_role_is_the_exported_policy() -> None:
    statements = template()["Resources"]["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    exported = role_policy()["Statement"]
    assert [s["Sid"] for s in statements] == [s["Sid"] for s in exported]
    for mine, theirs in zip(statements, exported, strict=True):
        actions = mine["Action"] if isinstance(mine["Action"], list) else [mine["Action"]]
        wanted = theirs["Action"] if isinstance(theirs["Action"], list) else [theirs["Action"]]
        assert actions == wanted, mine["Sid"]
        assert mine.get("Condition") == theirs.get("Condition"), mine["Sid"]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


def test_the_stack_deploys_with_the_exported_definition(aws: Any) -> None:
    loaded = load_runbook(ROOT / "runbooks" / "aws-rds-stepfunctions.yaml", check_paths=False)
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/restore-drill-tasks"
    definition = build_definition(loaded, queue_url=queue, runbook_uri="s3://defs/orders.yaml")
    aws.client("s3").create_bucket(Bucket="defs")
    aws.client("s3").put_object(Bucket="defs", Key="orders.asl.json", Body=json.dumps(definition))
    cfn = aws.client("cloudformation")
    name = f"drill-{uuid.uuid4().hex[:6]}"
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[
            {"ParameterKey": "DefinitionBucket", "ParameterValue": "defs"},
            {"ParameterKey": "DefinitionKey", "ParameterValue": "orders.asl.json"},
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    assert cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    assert outputs["QueueUrl"] == queue  # the queue the exported machine hands work to
    machine = aws.client("stepfunctions").describe_state_machine(stateMachineArn=outputs["StateMachineArn"])
    assert machine["name"] == name and ":role/" in machine["roleArn"]  # moto does not load DefinitionS3Location


def test_the_worker_role_answers_the_machine_and_deletes_only_tagged_drill_instances() -> None:
    res = template()["Resources"]
    statements = res["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    granted = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # everything the worker calls (drills/sfn_worker.py, drills/aws/adopted.py and the RDS backend's preflight)
    assert {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
        "states:GetExecutionHistory",
        "secretsmanager:GetSecretValue",
        "rds:DeleteDBInstance",
    } <= granted
    assert not [a for a in granted if a.endswith(":*") or a.startswith(("rds:Restore", "rds:Create", "rds:DeleteDBS"))]
    delete = by_sid["ModifyAndDeleteOnlyDrillInstances"]
    assert delete["Resource"]["Sub"].endswith(":db:drill-*")
    assert delete["Condition"] == {"StringEquals": {"aws:ResourceTag/restore-drills:created-by": "step-functions"}}
    assert by_sid["TheManagedMasterSecretOfDrillInstances"]["Resource"]["Sub"].endswith(":secret:rds!db-*")
    task = res["WorkerTask"]["Properties"]
    assert task["TaskRoleArn"] == {"GetAtt": "WorkerRole.Arn"}
    assert task["ContainerDefinitions"][0]["Command"][2] == "sfn-worker"
    network = res["WorkerService"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"


def test_with_an_image_the_stack_runs_the_worker_as_an_ecs_service_whose_command_drill_accepts(aws: Any) -> None:
    from drills.cli import build_parser

    aws.client("s3").create_bucket(Bucket="defs")
    aws.client("s3").put_object(Bucket="defs", Key="orders.asl.json", Body="{}")
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="worker", Description="worker", VpcId=vpc)["GroupId"]
    cfn = aws.client("cloudformation")
    params = {
        "DefinitionBucket": "defs",
        "DefinitionKey": "orders.asl.json",
        "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/restore-drills:1",
        "WorkerSubnets": subnet,
        "WorkerSecurityGroup": sg,
    }
    cfn.create_stack(
        StackName="drill-worker",
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    assert cfn.describe_stacks(StackName="drill-worker")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    ecs = aws.client("ecs")
    (cluster,) = ecs.list_clusters()["clusterArns"]
    (service,) = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])[
        "services"
    ]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = task["containerDefinitions"]
    assert container["image"] == params["WorkerImage"]
    args = build_parser().parse_args(container["command"])  # the image's ENTRYPOINT is drill
    queue = aws.client("sqs").get_queue_url(QueueName="restore-drill-tasks")["QueueUrl"]
    assert (args.command, args.queue_url, args.runbook_root, args.log_format) == (
        "sfn-worker",
        queue,
        [Path("/runbooks")],
        "json",
    )
