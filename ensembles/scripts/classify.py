#!/usr/bin/env python3
"""Routes a support message by keywords. Reads orc's (or llm-orc's) script JSON on stdin and
prints {"route": ..., "confidence": ...}."""
import json
import sys

request = json.load(sys.stdin)
text = str(request.get("input") or request.get("input_data") or "").lower()
routes = {
    "bug": ["crash", "error", "broken", "fails", "bug"],
    "feature": ["add", "support", "would like", "feature", "please make"],
}
scores = {route: sum(word in text for word in words) for route, words in routes.items()}
route, score = max(scores.items(), key=lambda kv: kv[1])
if score == 0:
    route = "question"
print(json.dumps({"route": route, "confidence": round(min(1.0, 0.5 + 0.25 * score), 2)}))
