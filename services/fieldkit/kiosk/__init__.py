"""The kiosk: operator login and the applicant session, in the locked browser."""
