"""The ground floor: the contracts every stage shares (file names, signature names, the run-folder
layout, errors a user can fix, locations). It imports nothing else of imgclf."""
