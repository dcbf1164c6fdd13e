"""Conversions back to the ad platforms, with local validators and an audit log; leads to
the CRM.

Writers (one per platform layout, each versioned), validators mirroring each platform's
documented errors, and the audit log that keeps a conversion from going twice to one
destination; they read the stored tables only (``journeys``, ``journey_steps``, ``touches``,
``identities``, ``credits``), never the stages' code. docs/exports.md.

- :mod:`~touchline.exports.google_ads`: offline click conversions, adjustments, enhanced
  conversions for leads, the Data Manager API request body
- :mod:`~touchline.exports.meta`: Conversions API server events
- :mod:`~touchline.exports.microsoft`: offline conversions, Bulk file and API payload
- :mod:`~touchline.exports.hashing`: each platform's normalisation and SHA-256
- :mod:`~touchline.exports.rows`: which conversions, clicks, contacts and values (Ibis)
- :mod:`~touchline.exports.audit`: ``exports``, ``exported_conversions``, rejects
- :mod:`~touchline.exports.export`: one export, end to end
- :mod:`~touchline.exports.crm`: lead records (first and last touch, counts, credits; Ibis)
- :mod:`~touchline.exports.crm_mapping`: HubSpot, Salesforce and your own field mappings
- :mod:`~touchline.exports.crm_push`: signed webhook delivery, retries, dead letters, files
"""

from __future__ import annotations

from touchline.exports.crm import lead_records
from touchline.exports.crm_push import PushResult, push_leads
from touchline.exports.export import DESTINATIONS, FORMATS, ExportResult, export_conversions

__all__ = ["DESTINATIONS", "FORMATS", "ExportResult", "PushResult", "export_conversions",
           "lead_records", "push_leads"]
