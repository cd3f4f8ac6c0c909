# Filters pip's stderr (scripts/setup.sh): drops the conflict line about fury's vtk cap, and the resolver's
# heading when no other conflict follows it; everything else passes unchanged.
/^ERROR: pip's dependency resolver does not currently take into account/ { held = $0; next }
/^fury [^ ]+ requires vtk/ { next }
{
    if (held != "") { print held; held = "" }
    print
}
