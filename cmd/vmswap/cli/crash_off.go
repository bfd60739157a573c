//go:build !crashhook

package cli

import "net/http"

// Without the crashhook build tag there is no crash hook: VMSWAP_CRASH_AT
// means nothing to a released vmswap.

type crashPoint struct{}

func parseCrash(func(string) string) (*crashPoint, error) { return nil, nil }

func (*crashPoint) afterSave() func(int) { return nil }

func (*crashPoint) afterCopy() func(string, int) { return nil }

func (*crashPoint) httpClient() *http.Client { return nil }
