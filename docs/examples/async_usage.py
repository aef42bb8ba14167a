"""The asyncio API (quickstart)."""

# start-async
import asyncio

from sessionkeeper import AsyncSessionManager


async def main() -> None:
    async with AsyncSessionManager(backend="memory") as sessions:
        s = await sessions.create(metadata={"user_id": "user_456"})
        fetched = await sessions.fetch(s.id)
        print(fetched.metadata["user_id"])  # user_456
        assert await sessions.delete(s.id)


asyncio.run(main())
# end-async
