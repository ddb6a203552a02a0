"""Pure tensor code: model definitions and weight-format readers. No sockets, files or asyncio here."""
