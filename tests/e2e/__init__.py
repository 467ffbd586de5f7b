"""The Django project that tests/test_servers.py serves with real gunicorn and uvicorn processes."""
