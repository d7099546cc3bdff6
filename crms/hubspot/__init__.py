"""HubSpot CRM v3: contacts, companies and any object by name (docs/connectors.md, "HubSpot")."""
