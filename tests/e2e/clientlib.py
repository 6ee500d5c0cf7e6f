"""What `client_v1.py` and `client_v2.py` share (standard library only, so both venvs run it).

Command line of both clients:

    client_vN.py URL [-H NAME:VALUE]... ACTION...

ACTION is `tools/call:NAME`, `prompts/get:NAME` or `resources/read:URI`. Each action runs on a
connection of its own (a denial that a client takes for a transport failure can end the
connection, and each action's outcome must be its own), and prints one JSON line:

    {"action", "target", "ok", "error_kind", "code", "message", "reason", "text"}

`error_kind` is null when `ok`, else `mcp_error` (the client raised the JSON-RPC error it read),
`tool_error` (a result with `isError`), `transport` (any other failure) or `timeout`. `reason` is
`error.data.reason` of an MCP error, or `_meta["mcp-authz/reason"]` of a tool error, when the
client hands them over. `code` is the JSON-RPC error code of an MCP error, or the HTTP status of
a transport failure when the client tells it. `text` is the result's first text, when there is
one.
"""

import argparse
import asyncio
import json

ACTIONS = ("tools/call", "prompts/get", "resources/read")

# Seconds one action may take before it is reported as a timeout (a client that never resolves
# a denied request must not hang the test).
ACTION_TIMEOUT = 20


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("-H", dest="headers", action="append", default=[], metavar="NAME:VALUE")
    parser.add_argument("actions", nargs="+", metavar="ACTION")
    args = parser.parse_args()
    headers = {}
    for header in args.headers:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    actions = []
    for action in args.actions:
        method, _, target = action.partition(":")
        if method not in ACTIONS or not target:
            parser.error(f"unknown action {action!r}: expected one of {ACTIONS} with :TARGET")
        actions.append((method, target))
    return args.url, headers, actions


def emit(action, target, ok, error_kind=None, code=None, message=None, reason=None, text=None):
    line = {
        "action": action,
        "target": target,
        "ok": ok,
        "error_kind": error_kind,
        "code": code,
        "message": message,
        "reason": reason,
        "text": text,
    }
    print(json.dumps(line), flush=True)


def data_reason(data):
    return data.get("reason") if isinstance(data, dict) else None


def first_text(contents):
    for content in contents or []:
        text = getattr(content, "text", None)
        if isinstance(text, str):
            return text
    return None


def leaf(error):
    """The first non-group exception inside (anyio task groups wrap what failed)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def describe(error):
    error = leaf(error)
    return f"{type(error).__name__}: {error}"


def report(action, target, result, is_error):
    """Prints the line for an answer that is a result (a tool result may still be a tool error)."""
    if action == "tools/call":
        text = first_text(result.content)
        if is_error:
            meta = result.meta or {}
            emit(action, target, False, "tool_error", message=text,
                 reason=meta.get("mcp-authz/reason"), text=text)
            return
    elif action == "prompts/get":
        text = first_text([m.content for m in result.messages])
    else:
        text = next((c.text for c in result.contents if hasattr(c, "text")), None)
    emit(action, target, True, text=text)


def run(act, mcp_error, http_status=lambda error: None):
    """Runs `act(url, headers, action, target)` for each action of the command line and prints
    its outcome. A failure is an MCP error when `mcp_error(leaf)` gives its (code, message,
    data), else a transport failure, with the HTTP status `http_status(leaf)` finds, if any."""

    async def main():
        url, headers, actions = parse_args()
        for action, target in actions:
            try:
                # The SDK's own read timeout does not cover a transport that never answers.
                await asyncio.wait_for(act(url, headers, action, target), ACTION_TIMEOUT + 5)
            except asyncio.TimeoutError:
                emit(action, target, False, "timeout")
            except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
                inner = leaf(error)
                mcp = mcp_error(inner)
                if mcp is not None:
                    code, message, data = mcp
                    emit(action, target, False, "mcp_error", code, message, data_reason(data))
                else:
                    emit(action, target, False, "transport", http_status(inner), describe(error))

    asyncio.run(main())
