/* The version of the library actually loaded (shmds/version.h). */
#include "internal.h"

SHMDS_API unsigned shmds_version(void)
{
    return SHMDS_VERSION_HEX;
}

SHMDS_API const char *shmds_version_string(void)
{
    return SHMDS_VERSION_STRING;
}
