"""PostgreSQL: the embedded server, connections, migrations and the repositories the assets use."""
