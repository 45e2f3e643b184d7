/* fhirsync/fhirsync.h: the umbrella header of libfhirsync, a SMART on FHIR Backend Services
 * client: keys and JWKS, client assertions, discovery, tokens, FHIR REST, Bulk Data, stores.
 * Call fhirsync_global_init() first. Link with `pkg-config --libs fhirsync`. */
#ifndef FHIRSYNC_H
#define FHIRSYNC_H

#include "fhirsync/auth.h"
#include "fhirsync/bulk.h"
#include "fhirsync/client.h"
#include "fhirsync/common.h"
#include "fhirsync/config.h"
#include "fhirsync/doctor.h"
#include "fhirsync/keys.h"
#include "fhirsync/log.h"
#include "fhirsync/login.h"
#include "fhirsync/store.h"
#include "fhirsync/sync.h"
#include "fhirsync/view.h"

#endif
