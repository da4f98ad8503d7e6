"""Build-host code: the image build (``image``) and its commands (``cli``: ``fieldkit image``,
``fieldkit policy``). It runs on the provisioning admin's machine, never on a device; a device
keeps only what it runs (the policy models it checks itself against are ``fieldkit.policies``).
"""
