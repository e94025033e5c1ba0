"""An MCP client for the `orc mcp` tests, on the official MCP Python SDK (`mcp` on PyPI).

Usage: python client.py ORC CALLS_JSON [ARGS...]

Starts `ORC mcp ARGS...` over stdio in the current directory, lists its tools, then makes
each call of CALLS_JSON (a list of {"tool", "arguments", "progress", "timeout", "sleep"}) in
order: `progress` asks for progress notifications, `timeout` gives up on the call after that
many seconds (the SDK then cancels the request), `sleep` waits that long before the call. An
argument value "{{run_id}}" is replaced by the `run_id` of the last run a call returned.
Prints one JSON document: {"server", "tools", "calls": [{"result", "progress", "error"}]}.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def fill(value, run_id):
    if value == "{{run_id}}":
        return run_id
    if isinstance(value, dict):
        return {k: fill(v, run_id) for k, v in value.items()}
    return value


async def main():
    orc, calls = sys.argv[1], json.loads(sys.argv[2])
    # The server gets this process's whole environment (the test sets it), not the SDK's
    # default subset.
    params = StdioServerParameters(command=orc, args=["mcp", *sys.argv[3:]], env=dict(os.environ))
    report = {"calls": []}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            report["server"] = init.server_info.model_dump(mode="json")
            listed = await session.list_tools()
            report["tools"] = [t.model_dump(mode="json", exclude_none=True) for t in listed.tools]
            run_id = None
            for call in calls:
                progress = []

                async def on_progress(value, total, message, progress=progress):
                    progress.append({"progress": value, "total": total, "message": message})

                entry = {"progress": progress}
                await asyncio.sleep(call.get("sleep", 0))
                try:
                    result = await session.call_tool(
                        call["tool"],
                        fill(call.get("arguments", {}), run_id),
                        read_timeout_seconds=call.get("timeout"),
                        progress_callback=on_progress if call.get("progress") else None,
                    )
                    entry["result"] = result.model_dump(mode="json", exclude_none=True)
                    structured = result.structured_content or {}
                    run_id = structured.get("run_id", run_id)
                except Exception as e:  # a protocol error is part of what the tests check
                    entry["error"] = str(e)
                report["calls"].append(entry)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
