"""tokios-connector: the outbound-only tunnel client (asyncio). Entry point: cli.main."""
