"""The login service: `service install | uninstall | status`, one backend per service manager."""
