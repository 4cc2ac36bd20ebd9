"""Sets up a moto server for the storage tests and prints JSON with what it made.

    python moto_users.py ENDPOINT

Creates two IAM users: "writer" (s3:* on everything) and "nobody" (no permissions), and the buckets
"torpor-test" (us-east-1) and "torpor-eu" (eu-west-1); then switches authentication on, so that from now on the
server checks every request's SigV4 signature and the user's permissions.
"""

import json
import sys
import urllib.request

import boto3

endpoint = sys.argv[1]
root = dict(endpoint_url=endpoint, aws_access_key_id="root", aws_secret_access_key="root", region_name="us-east-1")
iam = boto3.client("iam", **root)
keys = {}
for user, actions in (("writer", ["s3:*"]), ("nobody", [])):
    iam.create_user(UserName=user)
    if actions:
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
s3 = boto3.client("s3", **root)
s3.create_bucket(Bucket="torpor-test")
s3.create_bucket(Bucket="torpor-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
request = urllib.request.Request(
    endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
)
urllib.request.urlopen(request)
print(json.dumps(keys))
