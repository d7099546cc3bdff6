"""Outreach (API v2, JSON:API): prospects matched by email, accounts by domain or a custom id field;
OAuth refresh-token rotation kept in the StateStore; updatedAt polling with links.next paging."""
