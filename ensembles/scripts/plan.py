#!/usr/bin/env python3
"""Splits a task into steps, one per sentence or comma-separated part, as a JSON array."""
import json
import re
import sys

request = json.load(sys.stdin)
limit = int(request.get("parameters", {}).get("max_steps", 8))
text = str(request.get("input") or "")
parts = [p.strip() for p in re.split(r"[.;,\n]+", text) if p.strip()]
print(json.dumps({"steps": parts[:limit]}))
