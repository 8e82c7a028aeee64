"""The console's pages, one module per part: signing in, applications, deliveries, overview."""
