"""The hub web app (Flask under gunicorn): accounts, devices, operators, sites and visits,
reports and exports, and the municipalities' pick-up of sealed packets. See docs/hub-web.md."""
