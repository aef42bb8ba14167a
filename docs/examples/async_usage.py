"""The asyncio API (quickstart)."""

# start-async
import asyncio
import tempfile
from pathlib import Path

from sessionkeeper import AsyncSessionManager


async def main() -> None:
    async with AsyncSessionManager(backend="memory") as sessions:
        s = await sessions.create(metadata={"user_id": "user_456"})
        fetched = await sessions.fetch(s.id)
        print(fetched.metadata["user_id"])  # user_456
        assert await sessions.delete(s.id)


async def on_disk(directory: Path) -> None:
    # A backend that opens a file (or connects to a server) is opened with `await ... open()`:
    # the file is locked and loaded in a worker thread while the event loop goes on serving.
    opts = {"file_path": str(directory / "sessions.sqlite")}
    async with await AsyncSessionManager.open("sqlitedict", opts) as sessions:
        s = await sessions.create(metadata={"user_id": "user_456"})
        print((await sessions.fetch(s.id)).metadata)  # {'user_id': 'user_456'}
        print("fetch" in sessions.inline_operations)  # on the loop, or in a worker thread


asyncio.run(main())
with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(on_disk(Path(tmp)))
# end-async
