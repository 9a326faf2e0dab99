"""Capture and evidence: Chromium, page capture, crawl, patrol, WARC/WACZ, evidence PDFs."""
