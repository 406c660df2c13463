"""Process-wide shutdown signal: set when the server is asked to stop, so long-lived streams (SSE) end at once
instead of holding the graceful shutdown open."""

import threading

SHUTTING_DOWN = threading.Event()
