"""Talk to the example server over plain HTTP, so the session id is in plain sight.

python client.py open                 # initialize; prints the session id
python client.py call SESSION_ID      # call whoami in that session (after a restart too)
python client.py delete SESSION_ID    # end the session everywhere
"""

import json
import sys

import httpx

URL = "http://127.0.0.1:8000/mcp"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def _messages(response: httpx.Response) -> list[dict]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = response.text.splitlines()
        return [
            json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()
        ]
    return [response.json()] if response.content else []


def main(argv: list[str]) -> int:
    command, *rest = argv or ["open"]
    with httpx.Client(timeout=30) as http:
        if command == "open":
            init = {
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "example-client", "version": "1.0"}},
            }  # fmt: skip
            response = http.post(URL, json=init, headers=HEADERS)
            response.raise_for_status()
            session_id = response.headers["mcp-session-id"]
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            http.post(URL, json=done, headers={**HEADERS, "Mcp-Session-Id": session_id})
            print(session_id)
            return 0
        session = {**HEADERS, "Mcp-Session-Id": rest[0]}
        if command == "delete":
            print(http.delete(URL, headers=session).status_code)
            return 0
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}}  # fmt: skip
        response = http.post(URL, json=call, headers=session)
        if response.status_code != 200:
            print(response.status_code, response.text)
            return 1
        for message in _messages(response):
            if "result" in message:
                print(message["result"]["content"][0]["text"])
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
