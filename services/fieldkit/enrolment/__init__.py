"""Enrolment of a tablet with the hub (R16, R31): EST (RFC 7030) simple enrolment with a
one-time code, and a fieldkit extension for the device config. See docs/sync.md."""
