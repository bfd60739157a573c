package lab

import (
	"fmt"
	"time"
)

// Hetzner volumes (https://docs.hetzner.cloud/reference/cloud#volumes) are
// block devices attached to at most one server, in its location. The lab
// keeps them as records only: no machine mounts them. They are here so
// that a server with a volume looks as it does on Hetzner (its `volumes`),
// which a snapshot does not carry and vmswap must refuse to swap.

// hVolume is a Hetzner volume.
type hVolume struct {
	ID       int               `json:"id"`
	Name     string            `json:"name"`
	SizeGB   int               `json:"size"`
	Location string            `json:"location"`
	Format   *string           `json:"format"`
	ServerID int               `json:"server_id"`
	Labels   map[string]string `json:"labels"`
	Created  time.Time         `json:"created"`
}

func (l *Lab) hVolumes() []*hVolume {
	return sortedByID(l.st.Hetzner.Volumes, func(v *hVolume) int { return v.ID })
}

// hServerVolumes returns the IDs of the volumes attached to a server.
func (l *Lab) hServerVolumes(id int) []int {
	out := []int{}
	for _, v := range l.hVolumes() {
		if v.ServerID == id {
			out = append(out, v.ID)
		}
	}
	return out
}

func hVolumeJSON(v *hVolume) map[string]any {
	var server any
	if v.ServerID != 0 {
		server = v.ServerID
	}
	return map[string]any{"id": v.ID, "name": v.Name, "size": v.SizeGB, "format": v.Format, "server": server, "status": "available",
		"linux_device": fmt.Sprintf("/dev/disk/by-id/scsi-0HC_Volume_%d", v.ID), "location": hLocationJSON(hLocationNamed(v.Location)),
		"labels": labelsJSON(v.Labels), "protection": map[string]any{"delete": false}, "created": ts(v.Created)}
}

func (l *Lab) hzVolumesList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var vs []*hVolume
	for _, v := range l.hVolumes() {
		if (q.Get("name") == "" || v.Name == q.Get("name")) && sel.matches(v.Labels) {
			vs = append(vs, v)
		}
	}
	return hList(c, "volumes", vs, func(v *hVolume) any { return hVolumeJSON(v) }), nil
}

func (l *Lab) hzVolumesGet(c *call) (result, *apiError) {
	v := l.st.Hetzner.Volumes[c.idParam("id")]
	if v == nil {
		return result{}, hNotFound("volume")
	}
	return result{200, map[string]any{"volume": hVolumeJSON(v)}}, nil
}

// hzVolumesCreate makes a volume, attached to a server at once if the
// request names one (in the server's location).
func (l *Lab) hzVolumesCreate(c *call) (result, *apiError) {
	var in struct {
		Name      string            `json:"name"`
		Size      int               `json:"size"`
		Location  string            `json:"location"`
		Server    *int              `json:"server"`
		Format    *string           `json:"format"`
		Automount bool              `json:"automount"`
		Labels    map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Size < 10 || in.Size > 10240 {
		return result{}, hInvalid("size %d GB: a volume is 10 to 10,240 GB", in.Size)
	}
	if in.Format != nil && *in.Format != "xfs" && *in.Format != "ext4" {
		return result{}, hInvalid("format %q: one of xfs, ext4", *in.Format)
	}
	if in.Automount && in.Server == nil {
		return result{}, hInvalid("automount needs server")
	}
	for _, o := range l.st.Hetzner.Volumes {
		if o.Name == in.Name {
			return result{}, hUnique("volume name %q is already used", in.Name)
		}
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	v := &hVolume{Name: in.Name, SizeGB: in.Size, Format: in.Format, Labels: labels, Created: time.Now().UTC()}
	var d *droplet
	if in.Server != nil {
		if d = l.hServer(*in.Server); d == nil {
			return result{}, hInvalid("server %d not found", *in.Server)
		}
		v.Location = d.Region
	} else {
		loc, ok := hLocationBy(idOrName{name: in.Location, set: in.Location != ""})
		if !ok {
			return result{}, hInvalid("location %q not found: name a location or a server", in.Location)
		}
		v.Location = loc.Name
	}
	v.ID = l.nextID()
	l.st.Hetzner.Volumes[v.ID] = v
	a := l.hDoneAction("create_volume", hResource{v.ID, "volume"})
	next := []any{}
	if d != nil {
		v.ServerID = d.ID
		next = append(next, hActionJSON(l.hDoneAction("attach_volume", hResource{v.ID, "volume"}, hResource{d.ID, "server"})))
	}
	return result{201, map[string]any{"volume": hVolumeJSON(v), "action": hActionJSON(a), "next_actions": next}}, nil
}

func (l *Lab) hzVolumesDelete(c *call) (result, *apiError) {
	v := l.st.Hetzner.Volumes[c.idParam("id")]
	if v == nil {
		return result{}, hNotFound("volume")
	}
	if v.ServerID != 0 {
		return result{}, hErr(423, "locked", "volume %d is attached to server %d: detach it first", v.ID, v.ServerID)
	}
	delete(l.st.Hetzner.Volumes, v.ID)
	return result{204, nil}, nil
}

// hzVolumeAttach attaches a volume to a server of its location, or
// detaches it, when the action completes.
func (l *Lab) hzVolumeAttach(attach bool) handler {
	return func(c *call) (result, *apiError) {
		v := l.st.Hetzner.Volumes[c.idParam("id")]
		if v == nil {
			return result{}, hNotFound("volume")
		}
		res := []hResource{{v.ID, "volume"}}
		to, command := 0, "detach_volume"
		if attach {
			var in struct {
				Server    *int `json:"server"`
				Automount bool `json:"automount"`
			}
			if e := c.decode(&in); e != nil {
				return result{}, e
			}
			if in.Server == nil {
				return result{}, hInvalid("server is required")
			}
			d := l.hServer(*in.Server)
			switch {
			case d == nil:
				return result{}, hInvalid("server %d not found", *in.Server)
			case v.ServerID != 0:
				return result{}, hErr(422, "volume_already_attached", "volume %d is attached to server %d", v.ID, v.ServerID)
			case d.Region != v.Location:
				return result{}, hErr(422, "invalid_input", "volume %d is in %s, server %d in %s", v.ID, v.Location, d.ID, d.Region)
			}
			to, command = d.ID, "attach_volume"
			res = append(res, hResource{d.ID, "server"})
		} else if v.ServerID == 0 {
			return result{}, hErr(422, "volume_not_attached", "volume %d is not attached", v.ID)
		}
		a := l.hNewAction(command, l.cfg.Durations.Action, res...)
		l.hFinish(a, nil, func() *hActionError {
			if l.st.Hetzner.Volumes[v.ID] != v || (to != 0 && l.hServer(to) == nil) {
				return &hActionError{"not_found", "the volume or the server was deleted"}
			}
			v.ServerID = to
			return nil
		}, nil)
		return result{201, map[string]any{"action": hActionJSON(a)}}, nil
	}
}
