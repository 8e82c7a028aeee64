"""Where call records come from besides the API: message brokers and call-platform CDRs."""
