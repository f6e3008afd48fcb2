"""Runtime shells that drive tokios_proto and tokios_translate with real I/O."""
