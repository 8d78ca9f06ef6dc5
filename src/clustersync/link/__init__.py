"""The websocket transport between agents and servers (aiohttp on both ends)."""
