"""Print an AdmissionReview answer readably: the verdict, any warnings, and the JSON
patch decoded from its base64. Usage: curl ... | python3 examples/decode.py"""

import base64
import json
import sys

response = json.load(sys.stdin)["response"]
print(f"uid {response['uid']}: {'allowed' if response['allowed'] else 'denied'}")
for warning in response.get("warnings", []):
    print(f"warning: {warning}")
if "status" in response:
    print(f"message: {response['status'].get('message', '')}")
if "patch" in response:
    print(json.dumps(json.loads(base64.b64decode(response["patch"])), indent=2))
