"""A tiny project whose test run tests/test_threads.py starts in a subprocess, on PostgreSQL,
to show whether threads that did ORM work let Django drop the test database at teardown."""
