"""AWS provisioning for the manager cluster."""
