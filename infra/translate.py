"""Applies the SAM transform locally: SAM template in, plain CloudFormation JSON out.

The local AWS emulator (moto) does not run CloudFormation transforms, so infra/deploy-local.sh
translates the packaged template with aws-sam-translator (the library SAM CLI and the
AWS::Serverless transform use) and deploys the result. Usage: translate.py IN.yaml OUT.json
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """template.yaml names no managed policy (the roles are explicit), so nothing is looked up."""

    def load(self):
        return {}


def main(src: str, dst: str) -> None:
    # The translator resolves AWS::Region for ARNs it builds.
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
    with open(src, encoding="utf-8") as f:
        sam = yaml_parse(f.read())
    cfn = transform(sam, {}, NoManagedPolicies())
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(cfn, f, separators=(",", ":"), sort_keys=True)
    kinds = sorted({r["Type"] for r in cfn["Resources"].values()})
    print(f"translate: {len(cfn['Resources'])} resources ({', '.join(kinds)}) -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
