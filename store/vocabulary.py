"""The words every floor shares, each defined once: categories, languages, kinds, statuses.

The code, the database, the templates and the interface use these names (DESIGN.md §8).
"""

# A case's category, as the victim chose it (the sealed payload, DESIGN.md §6.3).
CATEGORIES = ("adult_ncii", "minor", "deepfake", "voyeur", "coerced_av")
# What a notice is written under: a case's category, or copyright (DMCA) where that is the route.
NOTICE_CATEGORIES = CATEGORIES + ("dmca",)

# The languages of every page, notice and passphrase.
LANGUAGES = ("ja", "en")

# What a registered item is (one file she chose). "source": an ordinary photo of herself (the
# school or social-media photo a fake was made from, DESIGN §6.3 #source-photos): its PDQ and
# face are searched for, but it is never treated as intimate content.
ITEM_KINDS = ("photo", "video", "selfie", "source")
# Kinds whose face is measured (never the photos she reports, DESIGN §6.3).
FACE_ITEM_KINDS = ("selfie", "source")

# A case as the victim's status page names it (DESIGN.md §6.3).
CASE_STATUSES = ("received", "searching", "found", "requested", "removed", "withdrawn")
# A case the crawler or staff may still move to "found".
CASE_NOT_YET_FOUND = ("received", "searching")

# A takedown (one URL of one case).
TAKEDOWN_STATUSES = ("ongoing", "requested", "still_up", "partly_removed", "removed", "on_hold")
OPEN_TAKEDOWN_STATUSES = ("ongoing", "requested", "still_up", "partly_removed")
# What the victim's status page counts as "requested" and "removed".
REQUESTED_STATUSES = ("requested", "still_up", "partly_removed")
REMOVED_STATUSES = ("removed",)

# How often a requested URL is looked at again until it is gone.
RECHECK_EVERY_S = 24 * 3600
