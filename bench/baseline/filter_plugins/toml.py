# COMPARISON BASELINE (bench/baseline/site.yml): the `toml` filter that
# containerd_runtime_config's template renderer provides, for Ansible's own
# template module. JSON's quoting of strings, booleans, integers and lists
# is valid TOML for every value the two containerd templates write; a dict
# becomes an inline table.
from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError


def to_toml(value):
    if isinstance(value, (bool, str, int, float)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {to_toml(v)}" for k, v in value.items()) + " }"
    raise AnsibleFilterError(f"the toml filter cannot write {type(value).__name__} as a TOML value")


class FilterModule:
    def filters(self):
        return {"toml": to_toml}
