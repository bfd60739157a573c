package dns

import "slices"

// Change turns an existing record into one of the wanted values.
type Change[T any] struct {
	Record T
	Value  string
}

// Diff plans how to make a record set whose records are have hold exactly
// want, for providers that store one value per record: records already
// holding a wanted value stay; other records are changed into the remaining
// values (keeping their IDs and settings); values left over are created;
// records left over are deleted.
func Diff[T any](have []T, value func(T) string, want []string) (update []Change[T], create []string, remove []T) {
	missing := slices.Clone(want)
	var stale []T
	for _, r := range have {
		if i := slices.Index(missing, value(r)); i >= 0 {
			missing = slices.Delete(missing, i, i+1)
		} else {
			stale = append(stale, r)
		}
	}
	for _, v := range missing {
		if len(stale) > 0 {
			update = append(update, Change[T]{stale[0], v})
			stale = stale[1:]
			continue
		}
		create = append(create, v)
	}
	return update, create, stale
}
