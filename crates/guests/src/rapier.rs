//! The rapier2d driver: a world built through the raw wasm-bindgen exports
//! (what `rapier2d.js` does), one `rawphysicspipeline_step` per frame.

use wasmer::{Instance, Store, Value};

use crate::{Error, GuestKind};

/// Handles (guest pointers) of the world's parts, in guest memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct World {
    pipeline: i32,
    gravity: i32,
    params: i32,
    islands: i32,
    broad_phase: i32,
    narrow_phase: i32,
    bodies: i32,
    colliders: i32,
    joints: i32,
    multibody_joints: i32,
    ccd: i32,
    /// The handle of the first dynamic body (for reads by tests).
    pub(crate) first_body: f64,
}

fn call(store: &mut Store, instance: &Instance, name: &str, args: &[Value]) -> Result<Box<[Value]>, Error> {
    let func = instance.exports.get_function(name).map_err(|e| Error::Export {
        guest: GuestKind::Rapier.to_string(),
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    func.call(store, args).map_err(|source| Error::Call {
        guest: GuestKind::Rapier.to_string(),
        call: name.to_owned(),
        source,
    })
}

fn call_i32(store: &mut Store, instance: &Instance, name: &str, args: &[Value]) -> Result<i32, Error> {
    let ret = call(store, instance, name, args)?;
    match ret.first() {
        Some(Value::I32(v)) => Ok(*v),
        other => Err(Error::BadReturn {
            guest: GuestKind::Rapier.to_string(),
            call: name.to_owned(),
            detail: format!("{other:?}, not an i32"),
        }),
    }
}

fn vector(store: &mut Store, instance: &Instance, x: f32, y: f32) -> Result<i32, Error> {
    call_i32(store, instance, "rawvector_new", &[Value::F32(x), Value::F32(y)])
}

impl World {
    /// Builds a world: a fixed ground box, two walls and `bodies` dynamic
    /// bodies (balls and boxes) stacked above it, which fall and pile up.
    pub(crate) fn build(store: &mut Store, instance: &Instance, bodies: u32) -> Result<Self, Error> {
        let mut new = |name: &str| call_i32(store, instance, name, &[]);
        let pipeline = new("rawphysicspipeline_new")?;
        let params = new("rawintegrationparameters_new")?;
        let islands = new("rawislandmanager_new")?;
        let broad_phase = new("rawbroadphase_new")?;
        let narrow_phase = new("rawnarrowphase_new")?;
        let body_set = new("rawrigidbodyset_new")?;
        let colliders = new("rawcolliderset_new")?;
        let joints = new("rawimpulsejointset_new")?;
        let multibody_joints = new("rawmultibodyjointset_new")?;
        let ccd = new("rawccdsolver_new")?;
        let gravity = vector(store, instance, 0.0, -9.81)?;
        let mut world = Self {
            pipeline,
            gravity,
            params,
            islands,
            broad_phase,
            narrow_phase,
            bodies: body_set,
            colliders,
            joints,
            multibody_joints,
            ccd,
            first_body: -1.0,
        };
        // Ground and walls (fixed).
        world.add(store, instance, 1, 0.0, -1.0, Shape::Cuboid(60.0, 1.0))?;
        world.add(store, instance, 1, -60.0, 30.0, Shape::Cuboid(1.0, 30.0))?;
        world.add(store, instance, 1, 60.0, 30.0, Shape::Cuboid(1.0, 30.0))?;
        let per_row = 20u32;
        for i in 0..bodies {
            let (col, row) = (i % per_row, i / per_row);
            let x = -40.0 + col as f32 * 4.0 + (row % 2) as f32 * 1.0;
            let y = 4.0 + row as f32 * 3.0;
            let shape = if i % 3 == 0 {
                Shape::Cuboid(0.9, 0.6)
            } else {
                Shape::Ball(0.8)
            };
            let handle = world.add(store, instance, 0, x, y, shape)?;
            if i == 0 {
                world.first_body = handle;
            }
        }
        Ok(world)
    }

    fn add(
        &mut self,
        store: &mut Store,
        instance: &Instance,
        rb_type: i32,
        x: f32,
        y: f32,
        shape: Shape,
    ) -> Result<f64, Error> {
        let translation = vector(store, instance, x, y)?;
        let rotation = call_i32(store, instance, "rawrotation_identity", &[])?;
        let center = vector(store, instance, 0.0, 0.0)?;
        let linvel = vector(store, instance, 0.0, 0.0)?;
        let (i, f) = (Value::I32, Value::F32);
        let ret = call(
            store,
            instance,
            "rawrigidbodyset_createRigidBody",
            &[
                i(self.bodies),
                i(1), // enabled
                i(translation),
                i(rotation),
                f(1.0), // gravity scale
                f(0.0), // mass
                i(0),   // mass only
                i(center),
                i(linvel),
                f(0.0), // angvel
                f(0.0), // principal angular inertia
                i(1),
                i(1),
                i(1), // translations and rotations enabled
                f(0.0),
                f(0.0), // damping
                i(rb_type),
                i(1), // can sleep
                i(0), // sleeping
                f(0.0),
                i(0), // soft CCD, CCD
                i(0), // dominance group
                i(0), // additional solver iterations
            ],
        )?;
        let handle = match ret.first() {
            Some(Value::F64(h)) => *h,
            other => {
                return Err(Error::BadReturn {
                    guest: GuestKind::Rapier.to_string(),
                    call: "rawrigidbodyset_createRigidBody".into(),
                    detail: format!("{other:?}, not an f64 handle"),
                })
            }
        };
        let shape = match shape {
            Shape::Cuboid(hx, hy) => call_i32(store, instance, "rawshape_cuboid", &[f(hx), f(hy)])?,
            Shape::Ball(r) => call_i32(store, instance, "rawshape_ball", &[f(r)])?,
        };
        let zero = vector(store, instance, 0.0, 0.0)?;
        let rotation = call_i32(store, instance, "rawrotation_identity", &[])?;
        let center = vector(store, instance, 0.0, 0.0)?;
        let retptr = call_i32(store, instance, "__wbindgen_add_to_stack_pointer", &[i(-16)])?;
        let created = call(
            store,
            instance,
            "rawcolliderset_createCollider",
            &[
                i(retptr),
                i(self.colliders),
                i(1), // enabled
                i(shape),
                i(zero),
                i(rotation),
                i(0),   // mass props mode: density
                f(0.0), // mass
                i(center),
                f(0.0), // principal angular inertia
                f(1.0), // density
                f(0.5), // friction
                f(0.1), // restitution
                i(0),
                i(0), // combine rules: average
                i(0), // not a sensor
                i(-1),
                i(-1),  // collision and solver groups: all
                i(0xF), // active collision types: default
                i(0),
                i(0),   // hooks, events
                f(0.0), // contact force event threshold
                f(0.0), // contact skin
                i(1),   // has parent
                Value::F64(handle),
                i(self.bodies),
            ],
        );
        call_i32(store, instance, "__wbindgen_add_to_stack_pointer", &[i(16)])?;
        created?;
        Ok(handle)
    }

    /// One physics step (the integration parameters' dt, 1/60 s).
    pub(crate) fn step(&self, store: &mut Store, instance: &Instance) -> Result<(), Error> {
        let i = Value::I32;
        call(
            store,
            instance,
            "rawphysicspipeline_step",
            &[
                i(self.pipeline),
                i(self.gravity),
                i(self.params),
                i(self.islands),
                i(self.broad_phase),
                i(self.narrow_phase),
                i(self.bodies),
                i(self.colliders),
                i(self.joints),
                i(self.multibody_joints),
                i(self.ccd),
            ],
        )?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Cuboid(f32, f32),
    Ball(f32),
}
