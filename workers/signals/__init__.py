"""Media signals (the hasher): images, videos, faces; the crawled side of every match."""
